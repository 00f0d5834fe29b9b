// The official openai npm SDK (6.x) against a running synapsex. Started by
// tests/api/test_openai_sdk.py, which passes the server and keys in:
//   SX_BASE_URL      http://127.0.0.1:PORT/v1
//   SX_TENANT_KEY    a pro tenant's key; SX_TENANT_SLUG its slug
//   SX_PLATFORM_KEY  a platform key
//   SX_FREE_KEY      a free tenant's key (20 requests/min: the 429 case)
//   SX_LOCAL_MODEL   the name of a local fixture model, or "" when absent
import assert from 'node:assert/strict';
import { test } from 'node:test';
import OpenAI from 'openai';

const baseURL = process.env.SX_BASE_URL;
const tenantKey = process.env.SX_TENANT_KEY;
const localModel = process.env.SX_LOCAL_MODEL || '';

function client(apiKey, extra = {}) {
  return new OpenAI({ apiKey, baseURL, maxRetries: 0, timeout: 20000, ...extra });
}

test('the spec example: tenant key, synapsex-chat, the aspirin question', async () => {
  const c = client(tenantKey);
  const response = await c.chat.completions.create({
    model: 'synapsex-chat',
    messages: [{ role: 'user', content: 'What medications interact with aspirin?' }],
  });
  assert.equal(response.object, 'chat.completion');
  assert.equal(response.model, 'synapsex-chat');
  assert.ok(response.choices[0].message.content.length > 0);
  assert.equal(response.choices[0].message.role, 'assistant');
  assert.ok(response.usage.total_tokens > 0);
  assert.equal(response.meta.adapter, null);
});

test('chat streamed, with usage', async () => {
  const c = client(tenantKey);
  const stream = await c.chat.completions.create({
    model: 'synapsex-chat',
    messages: [{ role: 'user', content: 'What medications interact with aspirin?' }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    if (chunk.choices.length) {
      text += chunk.choices[0].delta.content ?? '';
      finish = chunk.choices[0].finish_reason ?? finish;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.ok(text.length > 0);
  assert.equal(finish, 'stop');
  assert.ok(usage && usage.prompt_tokens > 0);
});

test('platform key with X-Tenant-ID', async () => {
  const c = client(process.env.SX_PLATFORM_KEY, {
    defaultHeaders: { 'X-Tenant-ID': process.env.SX_TENANT_SLUG },
  });
  const r = await c.chat.completions.create({
    model: 'synapsex-chat', messages: [{ role: 'user', content: '...' }],
  });
  assert.equal(r.model, 'synapsex-chat');
});

test('completions', async () => {
  const r = await client(tenantKey).completions.create({
    model: 'synapsex-chat', prompt: 'Say hello', max_tokens: 8,
  });
  assert.equal(r.object, 'text_completion');
  assert.ok(typeof r.choices[0].text === 'string');
});

test('embeddings (the SDK asks for base64 and decodes it)', async () => {
  const r = await client(tenantKey).embeddings.create({
    model: 'synapsex-chat', input: ['aspirin', 'warfarin'],
  });
  assert.equal(r.data.length, 2);
  assert.deepEqual(r.data[0].embedding, [0.5, -0.25, 7]);
  const f = await client(tenantKey).embeddings.create({
    model: 'synapsex-chat', input: 'abc', encoding_format: 'float',
  });
  assert.deepEqual(f.data[0].embedding, [0.5, -0.25, 3]);
});

test('models', async () => {
  const ids = [];
  for await (const m of client(tenantKey).models.list()) ids.push(m.id);
  assert.ok(ids.includes('synapsex-chat'));
  const one = await client(tenantKey).models.retrieve('synapsex-chat');
  assert.equal(one.owned_by, 'synapsex');
});

test('local engine model through the SDK', { skip: !localModel && 'fixtures absent' },
  async () => {
    const c = client(tenantKey);
    const r = await c.chat.completions.create({
      model: localModel, max_tokens: 8, temperature: 0,
      messages: [{ role: 'user', content: 'What medications interact with aspirin?' }],
    });
    assert.equal(r.model, localModel);
    assert.equal(r.meta.backend, 'local');
    const s = await c.chat.completions.create({
      model: localModel, max_tokens: 8, temperature: 0, stream: true,
      messages: [{ role: 'user', content: 'What medications interact with aspirin?' }],
    });
    let text = '';
    for await (const chunk of s) text += chunk.choices[0]?.delta?.content ?? '';
    assert.equal(text, r.choices[0].message.content);
    const e = await c.embeddings.create({ model: localModel, input: 'aspirin' });
    assert.equal(e.data[0].embedding.length, 64);
  });

test('typed errors: 401, 404, 400', async () => {
  await assert.rejects(
    client('sk-nobody-' + 'x'.repeat(40)).models.list(),
    (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  await assert.rejects(
    client(tenantKey).chat.completions.create({
      model: 'gpt-9', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.NotFoundError && /synapsex-chat/.test(e.message));
  await assert.rejects(
    client(tenantKey).chat.completions.create({
      model: 'synapsex-chat', n: 2, messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'n');
  await assert.rejects(
    client(tenantKey).chat.completions.create({
      model: 'synapsex-chat', messages: [{ role: 'user', content: 'x' }],
      tools: [{ type: 'function', function: { name: 'f', parameters: {} } }] }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'tools');
});

test('typed error: 429 once a free tenant passes its rate', async () => {
  const c = client(process.env.SX_FREE_KEY);
  let err = null;
  for (let i = 0; i < 40 && !err; i++) {
    try {
      await c.chat.completions.create({
        model: 'synapsex-chat', messages: [{ role: 'user', content: 'x' }] });
    } catch (e) {
      err = e;
    }
  }
  assert.ok(err instanceof OpenAI.RateLimitError, `got ${err}`);
  assert.equal(err.status, 429);
  assert.ok(err.headers.get('retry-after'));
});
