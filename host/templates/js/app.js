// The `{{name}}` service, in JavaScript.
//
//   GET /{{name}}?name=ada  -> {"greeting": "hello, ada", "visits": 1}
//   (`visits` counts every greeting, in the service's key-value store)
//
// Build it with `wasmhost build` (componentize-js against wit/, through
// `npm run build`); `wasmhost dev` rebuilds it and swaps it in on every save.
// Test it with ./test.sh against the running host.

import { open } from 'wasi:keyvalue/store@0.2.0-draft';
import { increment } from 'wasi:keyvalue/atomics@0.2.0-draft';

const encoder = new TextEncoder();

function respond(status, value) {
  return { status, headers: [['content-type', 'application/json']], body: encoder.encode(JSON.stringify(value)) };
}

function error(status, message) {
  return respond(status, { error: message });
}

function greeting(name) {
  return `hello, ${name}`;
}

export const handler = {
  handle(req) {
    const segments = req.path.split('/').filter((s) => s.length > 0);
    if (segments.length !== 1 || segments[0] !== '{{name}}') return error(404, 'no such resource');
    if (req.method !== 'GET') return error(405, 'method not allowed');
    const name = new URLSearchParams(req.query).get('name') ?? 'world';
    try {
      const visits = increment(open('visits'), 'count', 1n);
      return respond(200, { greeting: greeting(name), visits: Number(visits) });
    } catch (e) {
      return error(500, `key-value store: ${e?.payload?.tag ?? e}`);
    }
  },
};
