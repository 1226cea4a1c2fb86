"""Token storage: hashes only, names and roles resolved from them."""


def test_added_tokens_are_stored_hashed_and_resolve_to_their_owner(tmp_path):
    from service.auth import TokenTable, add_token

    f = tmp_path / "tokens"
    alice = add_token(f, "alice")
    root = add_token(f, "root", admin=True)
    assert alice not in f.read_text() and root not in f.read_text()
    table = TokenTable.load(f, "")
    assert table.lookup(alice).name == "alice" and not table.lookup(alice).admin
    assert table.lookup(root).admin and table.lookup("nope") is None
