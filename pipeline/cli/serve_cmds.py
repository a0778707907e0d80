"""``crosscam serve``: the run in a browser: click a person in any camera, see where and when they appeared."""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import webbrowser
from pathlib import Path
from typing import List, Optional

import typer

from pipeline.config import load_pipeline_config
from reid.errors import CrosscamError


def is_local_host(host: str) -> bool:
    """Whether ``host`` binds to this machine only (a loopback address or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one); a one-line error when it is taken."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise CrosscamError(f"--host {host}: not an address of this machine; use 127.0.0.1") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)  # proto IPPROTO_TCP: asyncio then sets TCP_NODELAY (no 40 ms delayed-ACK stalls)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise CrosscamError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror}); pick another --port") from None
    sock.listen(128)
    return sock


def register(app: typer.Typer) -> None:
    """Add ``serve`` to ``app``."""

    @app.command("serve")
    def serve(
        run_dir: Path = typer.Argument(..., help="Run directory written by `crosscam track --out RUN_DIR` (or a demo's run/)."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; anything but this machine's "
                                 "loopback needs --token."),
        port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0: any free one; the URL printed says which)."),
        token: Optional[str] = typer.Option(None, "--token", help="Secret every request must carry (required with a "
                                            "non-local --host); the printed URL includes it."),
        open_browser: bool = typer.Option(False, "--open", help="Open the page in the default browser."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON line once listening, instead of the URL line: "
                                     "url, port, run_dir, processes (for a script that started it with --port 0)."),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML config (store settings; default configs/base.yaml)."),
        set_: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE",
                                                 help="Override one config key, e.g. store.bf16_scan=false (repeatable)."),
        workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Server processes (default: the CPUs, at "
                                              "most 4; 1 for an exact index of 50k tracks or more scanned in fp32, "
                                              "see store.bf16_scan): concurrent queries use every core. Each holds "
                                              "the store's index in memory (about 2 KB per track, 3 KB with the "
                                              "bf16 scan)."),
    ) -> None:
        """Serve RUN_DIR's cameras, identities and queries as a local web page and JSON API (/docs).
        Click a person's box in any camera (or draw one, or upload a photo) to see every camera they
        appeared in and when. Reads the run only; Ctrl-C stops it."""
        from pipeline.serve import create_app  # the server's dependencies load only for this command
        from pipeline.serve.processes import default_workers, serve_one_process, serve_processes

        if not is_local_host(host) and not token:
            raise CrosscamError(f"--host {host}: reachable from other machines; give --token TOKEN as well "
                                "(every request must then carry it), or keep the default 127.0.0.1")
        settings = load_pipeline_config(config, set_ or [])
        # without a token only this machine's loopback names are answered (DNS rebinding), as in every worker
        web_app = create_app(run_dir, token, settings, loopback_only=token is None)  # one-line errors before listening
        processes = workers or default_workers(run_dir, settings.store)
        sock = bind(host, port)
        everywhere = host in ("0.0.0.0", "::")  # every interface: other machines reach it by this one's name
        shown_host = socket.gethostname() if everywhere else f"[{host}]" if ":" in host else host
        port = sock.getsockname()[1]  # the one bound (--port 0: any free one)
        port_token = f":{port}/" + (f"?token={token}" if token else "")
        url = f"http://{shown_host}{port_token}"
        where = f"all interfaces; here http://127.0.0.1{port_token}; " if everywhere else ""
        if as_json:
            typer.echo(json.dumps({"url": url, "port": port, "run_dir": str(Path(run_dir).resolve()),
                                   "processes": processes}))
        else:
            typer.echo(f"crosscam serve: {url}  ({where}run {Path(run_dir).resolve()}; {processes} process"
                       f"{'es' if processes > 1 else ''}; Ctrl-C stops)")
        if open_browser:
            threading.Timer(0.5, webbrowser.open, args=(f"http://127.0.0.1{port_token}" if everywhere else url,)).start()
        if processes > 1:
            stopped_by = serve_processes(sock, processes, run_dir, token, config, set_ or [])
        else:
            stopped_by = serve_one_process(sock, web_app)
        if stopped_by is not None:
            raise typer.Exit(128 + stopped_by)  # 130 after Ctrl-C, 143 after SIGTERM, as `crosscam track`
