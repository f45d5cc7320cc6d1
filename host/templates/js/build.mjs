// Builds app.js into a component for the `service` world (wit/) with
// componentize-js: node build.mjs OUT.wasm (`wasmhost build` runs it).
import { componentize } from '@bytecodealliance/componentize-js';
import { execFileSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, '{{name}}.wasm'));
// A syntax error, with its line (componentize-js alone does not say where).
try {
  execFileSync(process.execPath, ['--check', join(here, 'app.js')], { stdio: ['ignore', 'inherit', 'inherit'] });
} catch {
  process.exit(1);
}
const { component } = await componentize({
  sourcePath: join(here, 'app.js'),
  witPath: join(here, 'wit'),
  worldName: 'service',
  disableFeatures: ['random', 'clocks', 'fetch-event'],
});
await writeFile(out, component);
