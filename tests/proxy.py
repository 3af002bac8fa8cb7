"""A loopback TCP proxy that tests put between the service and PostgreSQL, and cut.

`cut()` resets every open connection and answers new ones by closing them at
once, like a database that went away; `blackhole()` accepts and then says
nothing, like a network that drops packets; `restore()` forwards again. The
listening port never changes, so the service keeps its DATABASE_URL.
"""
import selectors
import socket
import threading

FORWARD, CUT, BLACKHOLE = "forward", "cut", "blackhole"
_CHUNK = 65536


class TcpProxy:
    """127.0.0.1:<port> -> target, in one background thread."""

    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._mode = FORWARD
        self._lock = threading.Lock()
        self._pairs = {}  # socket -> its peer socket
        self._held = []  # blackholed client sockets, closed on restore or stop
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._thread.start()

    def url_for(self, database_url):
        """DATABASE_URL with host and port replaced by this proxy's."""
        scheme, rest = database_url.split("://", 1)
        userinfo, _, hostpath = rest.rpartition("@")
        path = hostpath.split("/", 1)[1] if "/" in hostpath else ""
        auth = userinfo + "@" if userinfo else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/{path}"

    @property
    def open_connections(self):
        with self._lock:
            return len(self._pairs) // 2

    def cut(self):
        """Reset every forwarded connection and refuse new ones (closed on accept)."""
        self._switch(CUT)

    def blackhole(self):
        """Reset every forwarded connection; new ones are accepted and never answered."""
        self._switch(BLACKHOLE)

    def restore(self):
        """Forward new connections again."""
        self._switch(FORWARD)

    def stop(self):
        self._stopping = True
        self._wake_w.send(b"x")
        self._thread.join(10)
        for sock in list(self._pairs) + self._held + [self._listener, self._wake_r, self._wake_w]:
            _close(sock)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _switch(self, mode):
        done = threading.Event()
        with self._lock:
            self._mode = mode
            self._switched = done
        self._wake_w.send(b"x")
        if not done.wait(10):
            raise RuntimeError("proxy thread did not switch mode")

    def _run(self):
        while not self._stopping:
            for key, _ in self._selector.select(timeout=1.0):
                if key.data == "accept":
                    self._accept()
                elif key.data == "wake":
                    self._wake_r.recv(4096)
                    self._apply_mode()
                else:
                    self._pump(key.fileobj)

    def _apply_mode(self):
        with self._lock:
            mode, done = self._mode, getattr(self, "_switched", None)
            self._switched = None
        if mode != FORWARD:
            for sock in list(self._pairs):
                self._drop(sock, reset=True)
        if mode == FORWARD:
            for sock in self._held:
                _close(sock, reset=True)
            self._held = []
        if done is not None:
            done.set()

    def _accept(self):
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        mode = self._mode
        if mode == CUT:
            _close(client, reset=True)
            return
        if mode == BLACKHOLE:
            self._held.append(client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _close(client, reset=True)
            return
        for sock in (client, upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._pairs[client], self._pairs[upstream] = upstream, client
        self._selector.register(client, selectors.EVENT_READ, "pump")
        self._selector.register(upstream, selectors.EVENT_READ, "pump")

    def _pump(self, sock):
        peer = self._pairs.get(sock)
        if peer is None:
            return
        try:
            data = sock.recv(_CHUNK)
            if data:
                peer.setblocking(True)
                peer.settimeout(5)
                peer.sendall(data)
                peer.setblocking(False)
                return
        except OSError:
            pass
        self._drop(sock, reset=False)

    def _drop(self, sock, reset):
        with self._lock:
            peer = self._pairs.pop(sock, None)
            if peer is not None:
                self._pairs.pop(peer, None)
        for s in (sock, peer):
            if s is None:
                continue
            try:
                self._selector.unregister(s)
            except (KeyError, ValueError):
                pass
            _close(s, reset=reset)


def _close(sock, reset=False):
    try:
        if reset:
            # SO_LINGER 0: close() sends RST, as a crashed peer or a cut network would.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    except OSError:
        pass
