// Derive the JSON Schemas in this directory from @vercel/sdk's zod schemas (the wire form).
//
//   mkdir /tmp/sdk && cd /tmp/sdk && npm install @vercel/sdk@VERSION zod-to-json-schema@3
//   node tests/vercel_sdk_schemas/derive.mjs /tmp/sdk/node_modules/@vercel/sdk
//
// The SDK parses answers leniently (any value becomes a string, unknown enum values pass, null
// counts as absent). To get the shapes the SDK declares, this script copies the SDK's `esm`
// tree to `esm-strict` inside the SDK's directory and swaps its lenient helpers
// (types/primitives.js, types/smartUnion.js, types/enums.js) for strict ones. Request bodies are
// the input of the `$outboundSchema`s (their keys are the wire keys: no remap below the
// request), answers the input of the `$inboundSchema`s (before the camelCase remap), so every
// key here is as it travels on the wire (`speed_insights`, not `speedInsights`).
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const sdkDir = path.resolve(process.argv[2] ?? "");
const here = path.dirname(fileURLToPath(import.meta.url));
const sdkVersion = JSON.parse(readFileSync(path.join(sdkDir, "package.json"), "utf8")).version;
const strict = path.join(sdkDir, "esm-strict");
cpSync(path.join(sdkDir, "esm"), strict, { recursive: true });

writeFileSync(path.join(strict, "types/primitives.js"), `import * as z from "zod/v3";
export const string = () => z.string();
export const boolean = () => z.boolean();
export const number = () => z.number();
export const date = () => z.string();
export const literal = (value) => z.literal(value);
export const optional = (t) => t.optional();
export const nullable = (t) => t.nullable();
`);
writeFileSync(path.join(strict, "types/smartUnion.js"), `import * as z from "zod/v3";
export const smartUnion = (options) => z.union(options);
`);
writeFileSync(path.join(strict, "types/enums.js"), `import * as z from "zod/v3";
const strings = (e) => z.union(Object.values(e).map((x) => z.literal(x)));
const ints = (e) => z.union(Object.values(e).filter((v) => typeof v === "number").map((x) => z.literal(x)));
export const inboundSchema = strings;
export const inboundSchemaInt = ints;
export const outboundSchema = strings;
export const outboundSchemaInt = ints;
`);

const require = createRequire(path.join(sdkDir, "package.json"));
const { zodToJsonSchema } = await import(pathToFileURL(require.resolve("zod-to-json-schema")));
const z = await import(pathToFileURL(require.resolve("zod/v3")));
const models = async (name) => import(pathToFileURL(path.join(strict, "models", `${name}.js`)));

// file name -> [SDK module, export, is a list]
const targets = {
  "create-drain.request": ["createdrainop", "CreateDrainRequestBody$outboundSchema"],
  "create-drain.response": ["createdrainop", "CreateDrainResponseBody$inboundSchema"],
  "get-drains.response": ["getdrainsop", "GetDrainsResponseBody$inboundSchema"],
  "test-drain.request": ["testdrainop", "TestDrainRequestBody$outboundSchema"],
  "test-drain.response": ["testdrainop", "TestDrainResponseBody$inboundSchema"],
  "create-log-drain.request": ["createlogdrainop", "CreateLogDrainRequestBody$outboundSchema"],
  "create-log-drain.response": ["createlogdrainop", "CreateLogDrainResponseBody$inboundSchema"],
  "get-integration-log-drains.response":
    ["getintegrationlogdrainsop", "GetIntegrationLogDrainsResponseBody$inboundSchema", true],
};

for (const [file, [module, name, list]] of Object.entries(targets)) {
  const schema = (await models(module))[name];
  const json = zodToJsonSchema(list ? z.array(schema) : schema, {
    $refStrategy: "none", effectStrategy: "input", pipeStrategy: "input",
  });
  json.$comment = `Derived from @vercel/sdk ${sdkVersion}, src/models/${module}.ts ${name}, ` +
    "by tests/vercel_sdk_schemas/derive.mjs; do not edit by hand.";
  writeFileSync(path.join(here, `${file}.json`), JSON.stringify(json, null, 1) + "\n");
}
writeFileSync(path.join(here, "SDK_VERSION"), sdkVersion + "\n");
console.log(`derived ${Object.keys(targets).length} schemas from @vercel/sdk ${sdkVersion}`);
