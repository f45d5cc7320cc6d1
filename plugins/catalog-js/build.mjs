// Builds catalog.js into a component for the `service` world with
// componentize-js: node build.mjs OUT.wasm
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, 'catalog.wasm'));
const { component } = await componentize({
  sourcePath: join(here, 'catalog.js'),
  witPath: join(here, '..', '..', 'wit'),
  worldName: 'service',
  disableFeatures: ['random', 'clocks', 'fetch-event'],
});
await writeFile(out, component);
console.log(`    ${out} (${component.length} bytes)`);
