// Drives a pixelmesh edge with the official OpenAI Node SDK, unchanged, and prints one JSON
// report on stdout for tests/test_openai_node_sdk.py to check. Usage:
//   PIXELMESH_BASE_URL=http://127.0.0.1:8080/v1 PIXELMESH_API_KEY=... node sdk_check.mjs <input.png> <mask.png>
import { readFile } from "node:fs/promises";
import OpenAI, { toFile } from "openai";

const client = new OpenAI({ baseURL: process.env.PIXELMESH_BASE_URL, apiKey: process.env.PIXELMESH_API_KEY, maxRetries: 0, timeout: 120_000 });
const [inputPath, maskPath] = process.argv.slice(2);
const report = {};

const generated = await client.images.generate({
  model: "pixelmesh-sketch", prompt: "a lighthouse at dusk", size: "512x512", n: 2, response_format: "b64_json",
  quality: "hd", output_format: "webp", seed: 7,
});
report.generate = {
  count: generated.data.length, b64: generated.data.map((d) => d.b64_json), size: generated.size,
  output_format: generated.output_format, perf: generated.perf, tokens_spent: generated.tokens_spent,
};

const byUrl = await client.images.generate({ model: "pixelmesh-sketch", prompt: "hills", size: "2:3" });
report.url = { url: byUrl.data[0].url, size: byUrl.size };

const stream = await client.images.generate({
  model: "pixelmesh-sketch", prompt: "a sea at night", size: "256x256", stream: true, partial_images: 2,
});
report.stream = [];
for await (const event of stream) {
  report.stream.push({ type: event.type, index: event.partial_image_index ?? null, b64: event.b64_json });
}

const image = await toFile(await readFile(inputPath), "input.png", { type: "image/png" });
const mask = await toFile(await readFile(maskPath), "mask.png", { type: "image/png" });
const edited = await client.images.edit({
  model: "pixelmesh-sketch", image, mask, prompt: "a forest", size: "256x256", response_format: "b64_json",
});
report.edit = { b64: edited.data[0].b64_json, size: edited.size };

const several = await client.images.edit({
  model: "pixelmesh-sketch", prompt: "dunes", size: "256x256",
  image: [await toFile(await readFile(inputPath), "a.png", { type: "image/png" }),
          await toFile(await readFile(inputPath), "b.png", { type: "image/png" })],
});
report.edit_several = { count: several.data.length, url: several.data[0].url };

const editStream = await client.images.edit({
  model: "pixelmesh-sketch", image: await toFile(await readFile(inputPath), "c.png", { type: "image/png" }),
  prompt: "sea", size: "256x256", stream: true, partial_images: 1,
});
report.edit_stream = [];
for await (const event of editStream) report.edit_stream.push(event.type);

const variation = await client.images.createVariation({
  model: "pixelmesh-sketch", image: await toFile(await readFile(inputPath), "v.png", { type: "image/png" }),
  n: 2, size: "256x256", response_format: "b64_json",
});
report.variation = { count: variation.data.length, b64: variation.data.map((d) => d.b64_json) };

const models = await client.models.list();
report.models = models.data.map((m) => ({ id: m.id, capabilities: m.capabilities }));

try {
  await client.images.generate({ model: "pixelmesh-sketch", prompt: "x", size: "1x1" });
  report.error = null;
} catch (err) {
  report.error = { name: err.constructor.name, status: err.status, param: err.param, code: err.code, type: err.type };
}
try {
  await client.images.generate({ model: "no-such-model", prompt: "x" });
} catch (err) {
  report.not_found = { name: err.constructor.name, status: err.status };
}

process.stdout.write(JSON.stringify(report));
