"""What the demo tells its operator before the first job: where each part answers and where its
secrets are, the Ray dashboard's token among them."""

from __future__ import annotations

from pathlib import Path

from service.client import demo


class StandInStack:
    """``service.stack.embedded.Stack`` as the demo reads it: URLs and token files. A stand-in
    because starting Ray and MLflow takes minutes on these cores; ``test_serve.py`` starts the real
    stack and checks the same line (``serve_cli.ray_token_line``) in ``bckd serve``'s output."""

    def __init__(self, cfg):
        self.api_url, self.ray_url = "http://127.0.0.1:1", "http://127.0.0.1:2"
        self.mlflow_url = "http://127.0.0.1:3"
        self.admin_token_file = Path(cfg.data_dir) / "admin_token"
        self.ray_token_file = Path(cfg.data_dir) / "ray_auth_token"
        self.stopped = False

    def start(self) -> None:
        self.admin_token_file.parent.mkdir(parents=True, exist_ok=True)
        self.admin_token_file.write_text("admin-token")

    def stop(self) -> None:
        self.stopped = True


def test_the_demo_names_the_ray_tokens_file_and_how_to_use_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("service.stack.embedded.Stack", StandInStack)
    monkeypatch.setattr(demo, "end_on_signals", lambda: None)  # pytest keeps its own handlers
    # --num-train 0 is refused right after the start-up lines: no data set, no job
    assert demo.main(["--data-dir", str(tmp_path / "state"), "--num-train", "0",
                      "--data", str(tmp_path / "data")]) == 2
    out = capsys.readouterr().out
    token_file = tmp_path / "state" / "ray_auth_token"
    (line,) = [ln for ln in out.splitlines() if ln.strip().startswith("Ray token:")]
    assert str(token_file) in line and "operator only" in line, out
    assert "paste its text when the dashboard asks" in line
    # the dashboard's own prompt names `ray get-auth-token`, which reads ~/.ray/auth_token
    assert f"RAY_AUTH_TOKEN_PATH={token_file} ray get-auth-token" in line
    assert "admin token: " + str(tmp_path / "state" / "admin_token") in out
