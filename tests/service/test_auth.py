"""Token storage: hashes only, names and roles resolved from them."""


def test_added_tokens_are_stored_hashed_and_resolve_to_their_owner(tmp_path):
    from service.core.auth import TokenTable, add_token

    f = tmp_path / "tokens"
    alice = add_token(f, "alice")
    root = add_token(f, "root", admin=True)
    assert alice not in f.read_text() and root not in f.read_text()
    table = TokenTable.load(f, "")
    assert table.lookup(alice).name == "alice" and not table.lookup(alice).admin
    assert table.lookup(root).admin and table.lookup("nope") is None


def test_add_refuses_a_name_the_loader_would_refuse_and_writes_nothing(tmp_path, capsys):
    import pytest

    from service.core.auth import _main, check_owner_name

    f = tmp_path / "tokens"
    for name in ("../evil", "a/b", ".hidden", "x" * 65, "alice\n"):
        with pytest.raises(ValueError, match="letters, digits"):
            check_owner_name(name)
        with pytest.raises(SystemExit) as info:  # the CLI's usage error: exit status 2
            _main(["add", name, "--file", str(f)])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "letters, digits" in err and "python -m service.core.auth add alice" in err, err
    assert not f.exists()
    assert _main(["add", "alice.b-2", "--file", str(f)]) == 0  # the form it names is taken


def test_one_bad_tokens_line_is_skipped_with_an_error_naming_it(tmp_path, caplog):
    from service.core.auth import TokenTable, add_token, hash_token

    f = tmp_path / "tokens"
    alice = add_token(f, "alice")
    # lines the loader refuses, as an older `add` (or a hand edit) could write them
    f.write_text(f.read_text() + f"{hash_token('evil')} ../evil user\nnot a line\n")
    env = f"{hash_token('bob-token')} bob user;{hash_token('x')} b@d admin"
    with caplog.at_level("ERROR", logger="bckd.service"):
        table = TokenTable.load(f, env)
    assert table.lookup(alice).name == "alice" and table.lookup("bob-token").name == "bob"
    assert table.lookup("evil") is None and table.lookup("x") is None and len(table) == 2
    errors = [r.getMessage() for r in caplog.records]
    assert any(f"tokens file {f}, line 2 skipped" in e and "'../evil'" in e for e in errors)
    assert any(f"tokens file {f}, line 3 skipped" in e for e in errors)
    assert any("BCKD_TOKENS, entry 2 skipped" in e and "'b@d'" in e for e in errors), errors


def test_the_api_answers_every_good_token_despite_a_bad_line(tmp_path, monkeypatch):
    from service.core.auth import hash_token
    from tests.service.inprocess import HeldRay, inprocess_api
    from tests.service.servicetools import TOKENS, toy_dataset

    toy = toy_dataset(tmp_path)
    users = ";".join([*(f"{hash_token(t)} {n} user" for n, t in TOKENS.items()),
                      f"{hash_token('evil-token')} ../evil user"])
    with inprocess_api(monkeypatch, tmp_path, HeldRay(), [toy.parent],
                       BCKD_TOKENS=users) as (c, _):
        assert c.get("/v1/jobs").status_code == 200  # alice's token
        bad = c.get("/v1/jobs", headers={"Authorization": "Bearer evil-token"})
        assert bad.status_code == 401, bad.text
