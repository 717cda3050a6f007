// Drives the Node `openai` package against attestproxy for tests/e2e/test_openai.py.
// Usage: node openai_client.js BASE_URL plain|stream [MODEL]
// Prints one JSON line per event on stdout:
//   {"kind":"chunk","t":<ms since start>,"at":<Unix seconds>,"seq":n,"sent_at":s,"content":"..."}
//     for each streamed chunk (seq and sent_at are the simulator's, carried in the chunk),
//   {"kind":"done","t":...,"content":"<whole text>"} at the end,
//   {"kind":"error","status":...,"message":"..."} when the SDK throws.
'use strict';
const path = require('path');
const { OpenAI } = require(path.join(__dirname, 'node_modules', 'openai'));

async function main() {
  const [baseURL, mode, model] = process.argv.slice(2);
  const client = new OpenAI({ baseURL, apiKey: process.env.OPENAI_API_KEY || 'sk-test', maxRetries: 0, timeout: 30000 });
  const start = process.hrtime.bigint();
  const ms = () => Number((process.hrtime.bigint() - start) / 1000000n);
  const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
  const messages = [{ role: 'user', content: 'Say hello from the enclave.' }];
  try {
    if (mode === 'stream') {
      const stream = await client.chat.completions.create({ model: model || 'test', messages, stream: true });
      let text = '';
      for await (const chunk of stream) {
        const piece = (chunk.choices[0] && chunk.choices[0].delta && chunk.choices[0].delta.content) || '';
        text += piece;
        out({ kind: 'chunk', t: ms(), at: Date.now() / 1000, seq: chunk.seq, sent_at: chunk.sent_at, content: piece });
      }
      out({ kind: 'done', t: ms(), content: text });
    } else {
      const r = await client.chat.completions.create({ model: model || 'test', messages });
      out({ kind: 'done', t: ms(), content: r.choices[0].message.content, id: r.id });
    }
  } catch (e) {
    out({ kind: 'error', status: e.status || null, message: String(e.message || e), error: e.error || null });
    process.exitCode = 1;
  }
}
main();
