// The `catalog` service, in JavaScript: products with names and prices.
//
//   GET  /products          -> {"products": [{sku, name, price_cents}, ...]}
//   GET  /products/{sku}    -> {sku, name, price_cents}, or 404
//   POST /products          {sku, name, price_cents} -> 201, 409 if the SKU exists
//
// Built with componentize-js against the shared WIT (`make plugins`); it keeps
// its products in the host's key-value store (wasi:keyvalue).

import { open } from 'wasi:keyvalue/store@0.2.0-draft';
import { log } from 'wasi:logging/logging@0.1.0-draft';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function respond(status, value) {
  const body = value === undefined ? new Uint8Array() : encoder.encode(JSON.stringify(value));
  return { status, headers: [['content-type', 'application/json']], body };
}

function error(status, message) {
  return respond(status, { error: message });
}

function product(bucket, sku) {
  const raw = bucket.get(sku);
  return raw === undefined || raw === null ? null : JSON.parse(decoder.decode(raw));
}

function allProducts(bucket) {
  const products = [];
  let cursor;
  do {
    const page = bucket.listKeys(cursor);
    for (const key of page.keys) {
      const p = product(bucket, key);
      if (p) products.push(p);
    }
    cursor = page.cursor;
  } while (cursor !== undefined && cursor !== null);
  return products;
}

function create(bucket, body) {
  let input;
  try {
    input = JSON.parse(decoder.decode(body));
  } catch {
    return error(400, 'the body must be JSON');
  }
  const { sku, name, price_cents: price } = input ?? {};
  if (typeof sku !== 'string' || !/^[A-Za-z0-9-]{1,64}$/.test(sku)) {
    return error(400, '`sku` must be 1-64 letters, digits or `-`');
  }
  if (typeof name !== 'string' || name.length === 0) {
    return error(400, '`name` must be a non-empty string');
  }
  if (!Number.isInteger(price) || price < 0) {
    return error(400, '`price_cents` must be a non-negative integer');
  }
  if (product(bucket, sku)) {
    return error(409, `product ${sku} already exists`);
  }
  const created = { sku, name, price_cents: price };
  bucket.set(sku, encoder.encode(JSON.stringify(created)));
  log('info', 'catalog', `product ${sku} created`);
  return respond(201, created);
}

export const handler = {
  handle(req) {
    const parts = req.path.split('/').filter((p) => p.length > 0);
    try {
      const bucket = open('products');
      if (parts.length === 1 && parts[0] === 'products') {
        if (req.method === 'GET') return respond(200, { products: allProducts(bucket) });
        if (req.method === 'POST') return create(bucket, req.body);
        return error(405, 'use GET or POST');
      }
      if (parts.length === 2 && parts[0] === 'products' && req.method === 'GET') {
        const p = product(bucket, parts[1]);
        return p ? respond(200, p) : error(404, `product ${parts[1]} not found`);
      }
      return error(404, 'no such resource');
    } catch (e) {
      return error(500, `catalog failed: ${e?.payload?.tag ?? e}`);
    }
  },
};
