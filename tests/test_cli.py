"""The `bulwark` command: refuses early with exit 2, and renders exactly what copier renders."""

from pathlib import Path

import copier
import pytest
import yaml
from conftest import REPO_ROOT
from gitrepo import commit_all, copy_working_tree, git, tree

from generator.cli import main

# Copier's "HEAD" of a local template includes its uncommitted changes; the default ref
# would pick the latest tag once there is one.
WORKING_TREE = ("--vcs-ref", "HEAD")


@pytest.fixture
def template_repo(tmp_path: Path) -> Path:
    """The template's working tree committed to a git repo of its own.

    `update` needs the template commit a project was made from; the working tree may be
    uncommitted, so the test makes its own history instead.
    """
    repo = tmp_path / "template-repo"
    repo.mkdir()
    copy_working_tree(repo)
    git(repo, "init", "-q")
    commit_all(repo, "template")
    return repo


def test_new_refuses_invalid_answers_before_writing(
    build_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(build_dir)
    assert main(["new", "build/y", "--data", "project_slug=1bad", "--defaults"]) == 2
    assert 'project_slug: "1bad" must be lowercase' in capsys.readouterr().err
    assert list(build_dir.iterdir()) == []


def test_new_maps_copier_refusals_to_exit_2_and_leaves_nothing(
    build_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Should the early pass ever miss a rule, copier's own validator refuses just as cleanly.
    monkeypatch.setattr("generator.cli.validate", lambda answers: [])
    dest = build_dir / "svc"
    assert (
        main(["new", str(dest), "--data", "project_slug=Orders!", "--defaults", *WORKING_TREE]) == 2
    )
    assert 'project_slug: "Orders!"' in capsys.readouterr().err
    assert not dest.exists()


def test_new_renders_a_preset(build_dir: Path) -> None:
    dest = build_dir / "svc"
    assert main(["new", str(dest), "--preset", "minimal", "--defaults", *WORKING_TREE]) == 0
    answers = yaml.safe_load((dest / ".copier-answers.yml").read_text(encoding="utf-8"))
    assert answers["targets"] == []
    assert answers["features"] == []
    assert (dest / "README.md").is_file()


@pytest.fixture
def git_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A global git config of the test's own, empty until the test writes to it.

    Nothing of the machine's identity (system or global config, environment) reaches git.
    """
    config = tmp_path / "gitconfig"
    config.touch()
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("NAME", "EMAIL"):
        monkeypatch.delenv(f"GIT_AUTHOR_{name}", raising=False)
        monkeypatch.delenv(f"GIT_COMMITTER_{name}", raising=False)
    monkeypatch.delenv("EMAIL", raising=False)
    return config


def _history(repo: Path) -> list[str]:
    """Each commit as "author <email> | committer <email> | subject", newest first."""
    return git(repo, "log", "--format=%an <%ae> | %cn <%ce> | %s").splitlines()


def test_new_commits_the_tree_as_the_answers_author_when_git_has_no_identity(
    build_dir: Path, git_config: Path
) -> None:
    dest = build_dir / "svc"
    author = ["-d", "author_name=Orders Team", "-d", "author_email=orders@example.com"]
    assert (
        main(["new", str(dest), "--preset", "minimal", *author, "--defaults", *WORKING_TREE]) == 0
    )
    assert git(dest, "status", "--porcelain") == ""
    assert git(dest, "branch", "--show-current") == "main\n"
    who = "Orders Team <orders@example.com>"
    assert _history(dest) == [f"{who} | {who} | Generate Orders API from the Bulwark template"]
    assert ".copier-answers.yml" in git(dest, "ls-files").splitlines()


def test_new_commits_as_git_s_own_identity_when_it_has_one(
    build_dir: Path, git_config: Path
) -> None:
    git_config.write_text("[user]\n\tname = Ada\n\temail = ada@example.com\n", encoding="utf-8")
    dest = build_dir / "svc"
    assert main(["new", str(dest), "--preset", "minimal", "--defaults", *WORKING_TREE]) == 0
    assert [line.split(" | ")[:2] for line in _history(dest)] == [
        ["Ada <ada@example.com>", "Ada <ada@example.com>"]
    ]


def test_new_with_no_git_leaves_no_repository(build_dir: Path) -> None:
    dest = build_dir / "svc"
    assert (
        main(["new", str(dest), "--preset", "minimal", "--defaults", "--no-git", *WORKING_TREE])
        == 0
    )
    assert (dest / ".copier-answers.yml").is_file()
    assert not (dest / ".git").exists()


def test_new_over_an_existing_repository_leaves_the_files_to_review(
    build_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    git(build_dir, "init", "-q")
    (build_dir / "NOTES.md").write_text("mine\n", encoding="utf-8")
    commit_all(build_dir, "owner's notes")
    new = ["new", str(build_dir), "--preset", "minimal", "--defaults", "--overwrite"]
    assert main([*new, *WORKING_TREE]) == 0
    assert "review and commit" in capsys.readouterr().out
    assert [line.split(" | ")[2] for line in _history(build_dir)] == ["owner's notes"]
    assert "?? .copier-answers.yml" in git(build_dir, "status", "--porcelain").splitlines()


def test_new_with_full_preset_equals_plain_copier(build_dir: Path) -> None:
    copier_yml = yaml.safe_load((REPO_ROOT / "copier.yml").read_text(encoding="utf-8"))
    answers = {
        "targets": ["docker", "kubernetes", "systemd", "nginx"],
        "features": list(copier_yml["features"]["choices"].values()),
    }
    # No --defaults: without a TTY on stdin the command must not prompt anyway.
    assert main(["new", str(build_dir / "cli"), "--preset", "full", *WORKING_TREE]) == 0
    copier.run_copy(
        str(REPO_ROOT),
        build_dir / "copier",
        data=answers,
        defaults=True,
        vcs_ref="HEAD",
        quiet=True,
    )
    assert tree(build_dir / "cli") == tree(build_dir / "copier")


def test_new_refuses_a_non_empty_dest(build_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (build_dir / "keep.txt").write_text("mine", encoding="utf-8")
    assert main(["new", str(build_dir), "--preset", "minimal", "--defaults"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert [path.name for path in build_dir.iterdir()] == ["keep.txt"]


def test_new_refuses_an_unknown_preset(build_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new", str(build_dir / "svc"), "--preset", "nope", "--defaults"]) == 2
    assert 'unknown preset "nope" (valid: minimal, api-postgres' in capsys.readouterr().err
    assert not (build_dir / "svc").exists()


def test_new_refuses_an_unknown_data_key(
    build_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["new", str(build_dir / "svc"), "--data", "colour=blue", "--defaults"]) == 2
    assert 'unknown question "colour"' in capsys.readouterr().err
    assert not (build_dir / "svc").exists()


def test_presets_lists_the_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("minimal", "api-postgres", "full"))


def test_update_refuses_a_directory_outsidegit(
    build_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["update", str(build_dir), "--defaults"]) == 2
    assert "not a git repository" in capsys.readouterr().err


def test_update_refuses_a_dirty_gittree(
    build_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    git(build_dir, "init", "-q")
    (build_dir / "edit.txt").write_text("uncommitted", encoding="utf-8")
    assert main(["update", str(build_dir), "--defaults"]) == 2
    error = capsys.readouterr().err
    assert "uncommitted changes" in error
    assert "edit.txt" in error


def test_update_pulls_template_changes_into_a_new_project_on_day_one(
    template_repo: Path, build_dir: Path, monkeypatch: pytest.MonkeyPatch, git_config: Path
) -> None:
    # No git identity on the machine: `new` and `update` both still work.
    monkeypatch.setattr("generator.cli.REPO_ROOT", template_repo)
    dest = build_dir / "svc"
    assert main(["new", str(dest), "--preset", "minimal", "--defaults", *WORKING_TREE]) == 0
    (template_repo / "template" / "ADDED.md").write_text("new in the template\n", encoding="utf-8")
    commit_all(template_repo, "template change")

    assert main(["update", str(dest), "--defaults"]) == 0
    assert (dest / "ADDED.md").read_text(encoding="utf-8") == "new in the template\n"
    answers = yaml.safe_load((dest / ".copier-answers.yml").read_text(encoding="utf-8"))
    assert answers["targets"] == []


def test_loadtest_help_describes_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert all(option in help_text for option in ("--scenario", "--duration", "--min-ratio"))
