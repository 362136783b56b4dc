"""The archive: the file sink's finished files, uploaded to S3-compatible object storage.

`keys` names an object for a finished file (pure), `store` talks to the store (boto3), and
`uploader` is the background thread of each worker that finds finished files, uploads them and
only then deletes them. Nothing here is on the delivery path: a file is finished (rotated and
compressed) by the file sink's own thread, and the uploader only reads what is on disk, so a
restart picks up where the last run stopped.
"""
