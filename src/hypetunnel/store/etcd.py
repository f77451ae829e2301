"""etcd Store: the SQLite store's semantics on a replicated etcd v3 cluster, plus the HA
controller's election and fencing primitives.

It talks to etcd's JSON gRPC-gateway (`/v3/kv/range`, `/v3/kv/txn`, `/v3/watch`) with httpx, so no
gRPC stack is needed. With a TLS context (`tls=`, the controller's client context: it presents the
controller's certificate and verifies the members against the CA) every endpoint must be https.

Layout under the prefix (default "/hypetunnel/"):

    <prefix><logical key>     one JSON document per key, exactly the SQLite store's keys
    <prefix>meta/revision     the store's own revision (0 when absent, +1 per non-empty commit)
    <prefix>meta/term         the controller election term (0 when absent)
    <prefix>meta/leader       {"node", "term", **info} written by the winning claim
    <prefix>meta/commit       {"id", "revision"} of the last commit (see `commit`)
    <prefix>meta/schema       the layout's version (store/schema.py; absent before versioning)

Every commit is ONE etcd transaction comparing meta/revision (and meta/term for a fenced view), so
a deposed controller's writes are refused by etcd itself, not by its own clock. etcd's revision is
not used as the store revision because it also moves on elections and is not dense.

The audit log (store/audit.py) lives under a sibling prefix, `<prefix without its last />-audit/`
(default "/hypetunnel-audit/"): outside the range `load()` reads and the watch follows, so
appending to it wakes no controller. A change's audit row is one more put in the change's txn.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from hypetunnel.errors import Conflict, FieldError
from hypetunnel.store.audit import KINDS, AuditRow, newest, pending_change, since_key
from hypetunnel.store.base import StaleRevision, StoreNotEmpty, StoreSnapshot, StoreUnavailable

log = logging.getLogger(__name__)

META = "meta/"
_REVISION, _TERM, _LEADER, _COMMIT, _SCHEMA = (
    META + n for n in ("revision", "term", "leader", "commit", "schema"))
# gRPC status codes that mean "the request itself is wrong": another member will say the same.
# (invalid argument e.g. too many txn ops, not found, exists, permission denied, resource
# exhausted e.g. the space quota alarm, failed precondition, out of range, unimplemented, auth)
_FATAL_CODES = {3, 5, 6, 7, 8, 9, 11, 12, 16}
_CAS_ATTEMPTS = 50  # unconditional commits retry their revision compare-and-swap this often
_SIDE_OPS = 100  # operations per side-document txn (etcd's default limit is 128)


class Fenced(Conflict):
    """A fenced write named an election term that is no longer the store's (writer deposed)."""

    def __init__(self, term: int, actual: int) -> None:
        self.term = term
        self.actual = actual
        reason = f"the election term is {actual}, the writer holds term {term}"
        self.errors = [FieldError("term", reason)]
        super().__init__(reason)


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def prefix_end(prefix: str) -> bytes:
    """etcd's range_end for "every key starting with prefix": the prefix with its last byte + 1
    (trailing 0xff bytes dropped first; b"\\0" means "to the end of the keyspace")."""
    raw = prefix.encode().rstrip(b"\xff")
    return raw[:-1] + bytes([raw[-1] + 1]) if raw else b"\0"


def check_schemes(endpoints: list[str], tls: bool) -> None:
    """With TLS every endpoint is https: one plain member would carry the store (and the
    election) in clear text and take any client."""
    for endpoint in endpoints:
        scheme = endpoint.partition("://")[0]
        if scheme not in ("http", "https") or "://" not in endpoint:
            raise ValueError(f"etcd endpoint {endpoint!r}: expected http://HOST:PORT or "
                             "https://HOST:PORT")
        if tls and scheme != "https":
            raise ValueError(f"etcd endpoint {endpoint!r}: TLS is configured, so it must be "
                             "https://")


class _Gateway:
    """POSTs to the first etcd member that answers; sticks to the last one that did.

    `timeout` is the budget of one operation across all members. Failed attempts cycle through
    the members until it is spent, each attempt limited to `attempt_timeout`: when the raft
    leader dies, a proposal sent to a follower that still trusts the dead leader hangs until
    etcd's own request timeout (seconds), while a member mid-election answers "no leader" at once
    (the "hasleader" metadata asks for that). Short attempts find the new leader within
    attempt_timeout of its election (~0.5-1 s after the kill with the lab's 500 ms election
    timeout). A slow but healthy cluster still answers: an attempt that times out may yet be
    applied, and its resend then reports that success (see EtcdStore.commit).
    """

    HEADERS = {"Grpc-Metadata-hasleader": "true"}  # gRPC metadata through the gateway

    def __init__(self, endpoints: list[str], timeout: float, attempt_timeout: float,
                 tls: ssl.SSLContext | None = None) -> None:
        if not endpoints:
            raise ValueError("EtcdStore needs at least one endpoint")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        check_schemes(self.endpoints, tls is not None)
        self.timeout = timeout
        self.attempt_timeout = min(attempt_timeout, timeout)
        self._preferred = 0
        # verify=True (httpx's default) only matters for an https endpoint without our context.
        self.verify: ssl.SSLContext | bool = tls if tls is not None else True
        self._http = httpx.Client(timeout=timeout, headers=self.HEADERS, verify=self.verify)
        self._budget = threading.local()  # .deadline of the operation this thread is in

    def order(self) -> list[str]:
        p = self._preferred
        return self.endpoints[p:] + self.endpoints[:p]

    @contextlib.contextmanager
    def operation(self) -> Iterator[None]:
        """One budget of `timeout` for every post made inside (in this thread): an operation
        of several requests (a commit's compare-and-swap rounds) is bounded as a whole."""
        if getattr(self._budget, "deadline", None) is not None:
            yield  # already inside an operation: its budget holds
            return
        self._budget.deadline = time.monotonic() + self.timeout
        try:
            yield
        finally:
            self._budget.deadline = None

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One request, failed over across members on connection errors, timeouts and "no
        leader"-style server errors. A txn may thus be applied by an attempt whose reply was
        lost and be sent again; callers make that safe (see EtcdStore.commit). Bounded by
        `timeout`, or by what is left of the enclosing operation()'s budget."""
        deadline = getattr(self._budget, "deadline", None) or time.monotonic() + self.timeout
        problems: list[str] = []
        rounds = 0
        while True:
            for endpoint in self.order():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreUnavailable(f"no etcd member answered {path} within "
                                           f"{self.timeout}s: {'; '.join(problems[-6:])}")
                # The last attempt that fits gets the whole rest of the budget.
                limit = remaining if remaining < 2 * self.attempt_timeout else self.attempt_timeout
                doc = self._attempt(endpoint, path, body, max(limit, 0.05), problems)
                if doc is not None:
                    self._preferred = self.endpoints.index(endpoint)
                    return doc
            rounds += 1
            # Every member refused or failed: an election is likely under way; back off briefly.
            time.sleep(min(0.02 * rounds, max(deadline - time.monotonic(), 0)))

    def _attempt(self, endpoint: str, path: str, body: dict[str, Any], timeout: float,
                 problems: list[str]) -> dict[str, Any] | None:
        try:
            reply = self._http.post(endpoint + path, json=body, timeout=timeout)
        except httpx.HTTPError as e:
            problems.append(f"{endpoint}: {type(e).__name__}: {e}")
            return None
        try:
            doc = reply.json()
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        if reply.status_code == 200 and doc and "error" not in doc:
            return doc
        message = doc.get("message") or doc.get("error") or reply.text[:200]
        if doc.get("code") in _FATAL_CODES:
            raise StoreUnavailable(f"etcd refused {path}: {message}")
        problems.append(f"{endpoint}: HTTP {reply.status_code}: {message}")
        return None

    def probe(self, url: str, path: str, timeout: float) -> tuple[dict[str, Any] | None, str]:
        """One request to one given member, no fail-over: (its answer, "") or (None, why)."""
        try:
            # A member without a leader still answers for itself: not "hasleader" here.
            reply = self._http.post(url.rstrip("/") + path, json={}, timeout=timeout,
                                    headers={"Grpc-Metadata-hasleader": "false"})
        except httpx.HTTPError as e:
            return None, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if reply.status_code != 200:
            return None, f"HTTP {reply.status_code}"
        try:
            doc = reply.json()
        except ValueError:
            return None, "not JSON"
        return (doc, "") if isinstance(doc, dict) else (None, "not a JSON object")

    def close(self) -> None:
        self._http.close()


@dataclass(frozen=True, slots=True)
class MemberHealth:
    """One etcd member as the controller sees it: up when it answers its status request."""

    name: str
    url: str
    up: bool
    problem: str = ""
    leader: bool = False


class EtcdStore:
    def __init__(self, endpoints: list[str], prefix: str = "/hypetunnel/",
                 timeout: float = 2.0, *, attempt_timeout: float = 0.25,
                 tls: ssl.SSLContext | None = None,
                 _gateway: _Gateway | None = None, _fence: int | None = None) -> None:
        """timeout: budget of one operation across every member (then StoreUnavailable);
        attempt_timeout: limit of one request to one member before trying the next;
        tls: the client context every request (and the watch) uses, see the module doc."""
        if not prefix:
            raise ValueError("the etcd prefix must not be empty")
        self.prefix = prefix
        self.audit_prefix = prefix.rstrip("/") + "-audit/"
        self.side_prefix = prefix.rstrip("/") + "-side/"  # store/side.py
        self.fence = _fence
        self._gw = _gateway or _Gateway(endpoints, timeout, attempt_timeout, tls)
        self._owner = _gateway is None  # views share (and must not close) their parent's client
        self._revision_hint = 0

    @property
    def endpoints(self) -> list[str]:
        return list(self._gw.endpoints)

    # -- encoding -------------------------------------------------------------------------------
    def _key(self, logical: str) -> str:
        return _b64(self.prefix + logical)

    def _logical(self, b64key: str) -> str:
        return _unb64(b64key)[len(self.prefix):]

    def _range(self, logical_prefix: str) -> tuple[int, dict[str, str]]:
        """(etcd revision, {logical key: text}) of every key under prefix+logical_prefix;
        linearizable (served through the raft leader), so it sees every acknowledged commit."""
        start = self.prefix + logical_prefix
        reply = self._gw.post("/v3/kv/range", {"key": _b64(start),
                                               "range_end": _b64(prefix_end(start))})
        return int(reply["header"]["revision"]), self._decode_kvs(reply.get("kvs", []))

    def _decode_kvs(self, kvs: list[dict[str, Any]]) -> dict[str, str]:
        return {self._logical(kv["key"]): _unb64(kv.get("value", "")) for kv in kvs}

    def _equals(self, logical: str, value: int) -> dict[str, Any]:
        """Compare a counter key; 0 means "absent", as a fresh store has no meta keys."""
        if value == 0:
            return {"target": "CREATE", "key": self._key(logical), "result": "EQUAL",
                    "create_revision": "0"}
        return {"target": "VALUE", "key": self._key(logical), "result": "EQUAL",
                "value": _b64(str(value))}

    def _put(self, logical: str, text: str) -> dict[str, Any]:
        return {"request_put": {"key": self._key(logical), "value": _b64(text)}}

    def _meta_range(self) -> dict[str, Any]:
        start = self.prefix + META
        return {"request_range": {"key": _b64(start), "range_end": _b64(prefix_end(start))}}

    # -- Store protocol -------------------------------------------------------------------------
    def load(self) -> StoreSnapshot:
        _, kvs = self._range("")
        revision = int(kvs.get(_REVISION, "0"))
        items = {k: json.loads(v) for k, v in kvs.items() if not k.startswith(META)}
        self._revision_hint = revision
        return StoreSnapshot(revision, items)

    def commit(
        self,
        puts: Mapping[str, dict[str, Any]],
        deletes: Iterable[str],
        *,
        expect_revision: int | None = None,
    ) -> int:
        # Encode first, like SQLite: an unencodable document raises before anything is sent.
        encoded = {key: json.dumps(value, sort_keys=True) for key, value in puts.items()}
        # etcd refuses a txn that touches one key twice; SQLite deletes then puts, so puts win.
        removed = [k for k in dict.fromkeys(deletes) if k not in encoded]
        for key in [*encoded, *removed]:
            if not key or key.startswith(META):
                raise ValueError(f"store key {key!r} is reserved")
        if not encoded and not removed:
            return self._empty_commit(expect_revision)
        ops = [self._put(k, v) for k, v in encoded.items()]
        ops += [{"request_delete_range": {"key": self._key(k)}} for k in removed]
        token = uuid.uuid4().hex
        base = self._revision_hint if expect_revision is None else expect_revision
        # One budget for the whole commit, however many compare-and-swap rounds it takes.
        with self._gw.operation():
            return self._commit_rounds(ops, token, base, expect_revision, (encoded, removed))

    def _commit_rounds(self, ops: list[dict[str, Any]], token: str, base: int,
                       expect_revision: int | None,
                       changed: tuple[Mapping[str, str], list[str]]) -> int:
        for _ in range(_CAS_ATTEMPTS):
            new = base + 1
            compare = [self._equals(_REVISION, base)]
            if self.fence is not None:
                compare.append(self._equals(_TERM, self.fence))
            success = [*ops, self._put(_REVISION, str(new)),
                       self._put(_COMMIT, json.dumps({"id": token, "revision": new}))]
            audit = pending_change(new, *changed)  # this round's revision names the row
            if audit is not None:
                success.append(self._audit_put_op(audit[1]))
            reply = self._gw.post("/v3/kv/txn", {"compare": compare, "success": success,
                                                 "failure": [self._meta_range()]})
            if reply.get("succeeded"):
                self._revision_hint = new
                if audit is not None:
                    audit[0].committed(audit[1])
                return new
            meta = self._decode_kvs(reply["responses"][0]["response_range"].get("kvs", []))
            last = json.loads(meta.get(_COMMIT, "{}"))
            if last.get("id") == token:
                # An earlier send of this very txn was applied (its reply was lost to a member
                # failure and the gateway resent it elsewhere): it succeeded, exactly once.
                self._revision_hint = int(last["revision"])
                if audit is not None:  # that send was this round's body, audit row included
                    audit[0].committed(audit[1])
                return self._revision_hint
            actual = int(meta.get(_REVISION, "0"))
            self._revision_hint = actual
            self._check_fence(meta)
            if expect_revision is not None:
                raise StaleRevision(expect_revision, actual)
            base = actual
        raise Conflict(f"gave up after {_CAS_ATTEMPTS} concurrent commits kept winning")

    def _empty_commit(self, expect_revision: int | None) -> int:
        _, meta = self._range(META)
        actual = int(meta.get(_REVISION, "0"))
        self._check_fence(meta)
        if expect_revision is not None and expect_revision != actual:
            raise StaleRevision(expect_revision, actual)
        return actual

    def _check_fence(self, meta: Mapping[str, str]) -> None:
        term = int(meta.get(_TERM, "0"))
        if self.fence is not None and term != self.fence:
            raise Fenced(self.fence, term)

    def close(self) -> None:
        if self._owner:
            self._gw.close()

    def revision(self) -> int:
        _, kvs = self._range(_REVISION)
        return int(kvs.get(_REVISION, "0"))

    # -- restore (backup.py) --------------------------------------------------------------------
    def restore(self, items: Mapping[str, dict[str, Any]], revision: int, schema: int,
                *, replace: bool) -> int:
        """One txn (so etcd's --max-txn-ops must allow every document: the lab's 10000 does),
        guarded by the revision read: a commit in between makes it fail, not interleave. The
        election keys (meta/term, meta/leader) stay: a deposed writer stays fenced."""
        encoded = {key: json.dumps(value, sort_keys=True) for key, value in items.items()}
        for key in encoded:
            if not key or key.startswith(META):
                raise ValueError(f"store key {key!r} is reserved")
        _, kvs = self._range("")
        current = int(kvs.get(_REVISION, "0"))
        documents = [k for k in kvs if not k.startswith(META)]
        if (current or documents) and not replace:
            raise StoreNotEmpty(f"{self.prefix} on {', '.join(self.endpoints)}", current,
                                len(documents))
        new = max(revision, current + 1) if (current or documents) else revision
        ops = [self._put(k, v) for k, v in encoded.items()]
        ops += [{"request_delete_range": {"key": self._key(k)}} for k in documents
                if k not in encoded]
        ops += [self._put(_REVISION, str(new)), self._put(_SCHEMA, str(schema)),
                self._put(_COMMIT, json.dumps({"id": uuid.uuid4().hex, "revision": new}))]
        try:
            reply = self._gw.post("/v3/kv/txn", {"compare": [self._equals(_REVISION, current)],
                                                 "success": ops})
        except StoreUnavailable as e:
            if "too many operations" in str(e):
                raise StoreUnavailable(f"{e}: the restore is one txn of {len(ops)} operations; "
                                       "start etcd with a larger --max-txn-ops") from e
            raise
        if not reply.get("succeeded"):
            raise Conflict("the store changed while it was being restored (a controller is "
                           "running on it?); nothing was restored")
        self._revision_hint = new
        return new

    # -- schema version (store/schema.py) --------------------------------------------------------
    def schema_version(self) -> int | None:
        _, kvs = self._range(_SCHEMA)
        return int(kvs[_SCHEMA]) if _SCHEMA in kvs else None

    def stamp_schema(self, version: int, expected: int | None) -> bool:
        # A version is never 0 once stamped, so 0 stands for "absent" (see _equals).
        reply = self._gw.post("/v3/kv/txn", {
            "compare": [self._equals(_SCHEMA, expected or 0)],
            "success": [self._put(_SCHEMA, str(version))]})
        return bool(reply.get("succeeded"))

    # -- side documents (store/side.py) ---------------------------------------------------------
    def side_load(self, prefix: str) -> dict[str, dict[str, Any]]:
        start = self.side_prefix + prefix
        reply = self._gw.post("/v3/kv/range", {"key": _b64(start),
                                               "range_end": _b64(prefix_end(start))})
        return {_unb64(kv["key"])[len(self.side_prefix):]: json.loads(_unb64(kv.get("value", "")))
                for kv in reply.get("kvs", [])}

    def side_commit(self, puts: Mapping[str, dict[str, Any]], deletes: Iterable[str]) -> None:
        """In txns of at most _SIDE_OPS operations, each only while the fence's term holds."""
        encoded = {key: json.dumps(value, sort_keys=True) for key, value in puts.items()}
        ops = [{"request_put": {"key": _b64(self.side_prefix + k), "value": _b64(v)}}
               for k, v in encoded.items()]
        ops += [{"request_delete_range": {"key": _b64(self.side_prefix + k)}}
                for k in dict.fromkeys(deletes) if k not in encoded]
        compare = [] if self.fence is None else [self._equals(_TERM, self.fence)]
        with self._gw.operation():
            for i in range(0, len(ops), _SIDE_OPS):
                reply = self._gw.post("/v3/kv/txn", {"compare": compare,
                                                     "success": ops[i:i + _SIDE_OPS],
                                                     "failure": [self._meta_range()]})
                if not reply.get("succeeded"):
                    meta = self._decode_kvs(
                        reply["responses"][0]["response_range"].get("kvs", []))
                    self._check_fence(meta)

    # -- audit log (AuditStore) ------------------------------------------------------------------
    def _audit_put_op(self, row: AuditRow) -> dict[str, Any]:
        return {"request_put": {"key": _b64(self.audit_prefix + row.key),
                                "value": _b64(json.dumps(row.doc, sort_keys=True))}}

    def audit_put(self, rows: Sequence[AuditRow]) -> None:
        ops = [self._audit_put_op(r) for r in rows]
        for i in range(0, len(ops), 100):  # under etcd's default --max-txn-ops (128)
            self._gw.post("/v3/kv/txn", {"compare": [], "success": ops[i:i + 100]})

    def audit_range(self, since: float, tenant: str | None, limit: int) -> list[dict[str, Any]]:
        rows: list[AuditRow] = []
        for kind in KINDS:
            start = self.audit_prefix + since_key(kind, since)
            end = prefix_end(f"{self.audit_prefix}{kind}/")
            reply = self._gw.post("/v3/kv/range", {"key": _b64(start), "range_end": _b64(end)})
            for kv in reply.get("kvs", []):
                key = _unb64(kv["key"])[len(self.audit_prefix):]
                rows.append(AuditRow(key, json.loads(_unb64(kv.get("value", "")))))
        return newest(rows, since, tenant, limit)

    def audit_prune(self, kind: str, keep: int) -> int:
        start = f"{self.audit_prefix}{kind}/"
        span = {"key": _b64(start), "range_end": _b64(prefix_end(start))}
        count = int(self._gw.post("/v3/kv/range", {**span, "count_only": True}).get("count", 0))
        if count <= keep:
            return 0
        # The oldest `count - keep` keys (keys sort by time): delete up to the last of them.
        reply = self._gw.post("/v3/kv/range", {**span, "keys_only": True,
                                               "limit": str(count - keep)})
        kvs = reply.get("kvs", [])
        if not kvs:
            return 0
        last = base64.b64decode(kvs[-1]["key"])
        reply = self._gw.post("/v3/kv/deleterange", {"key": span["key"],
                                                     "range_end": _b64(last + b"\0")})
        return int(reply.get("deleted", 0))

    # -- the cluster's health --------------------------------------------------------------------
    def members(self, timeout: float = 2.0) -> list[MemberHealth]:
        """Every member of the cluster (the member list, from any member that answers) with
        whether it answers a status request at its first client URL within `timeout`. Raises
        StoreUnavailable when no member answers the list."""
        listing = self._gw.post("/v3/cluster/member/list", {})
        out = []
        for m in listing.get("members", []):
            name = str(m.get("name") or m.get("ID", "?"))
            urls = m.get("clientURLs") or []
            if not urls:  # added, not started yet: it has never served
                out.append(MemberHealth(name, "", False, "not started (no client URL)"))
                continue
            status, problem = self._gw.probe(urls[0], "/v3/maintenance/status", timeout)
            leader = status is not None and str(status.get("leader")) == str(
                status.get("header", {}).get("member_id"))
            out.append(MemberHealth(name, urls[0], status is not None, problem, leader))
        return out

    # -- election and fencing -------------------------------------------------------------------
    def term(self) -> int:
        _, kvs = self._range(_TERM)
        return int(kvs.get(_TERM, "0"))

    def leader(self) -> dict[str, Any] | None:
        _, kvs = self._range(_LEADER)
        return json.loads(kvs[_LEADER]) if _LEADER in kvs else None

    def claim_term(self, expected: int, node: str, info: dict[str, Any]) -> bool:
        """Become leader for term expected+1 if the term is still `expected`; True if we won.
        Exactly one of several claimants with the same expected term wins."""
        won = expected + 1
        leader = {**info, "node": node, "term": won}
        reply = self._gw.post("/v3/kv/txn", {
            "compare": [self._equals(_TERM, expected)],
            "success": [self._put(_TERM, str(won)), self._put(_LEADER, json.dumps(leader))],
            "failure": [self._meta_range()],
        })
        if reply.get("succeeded"):
            return True
        # The gateway may have resent a claim whose first send was applied: if the term we
        # asked for is held by this node, that was us (node names are unique per controller).
        meta = self._decode_kvs(reply["responses"][0]["response_range"].get("kvs", []))
        holder = json.loads(meta.get(_LEADER, "{}"))
        return int(meta.get(_TERM, "0")) == won and holder.get("node") == node

    def fenced(self, term: int) -> EtcdStore:
        """A view whose commits also require meta/term == term; it shares this store's client
        (closing the view does nothing, closing this store closes both)."""
        return EtcdStore(self._gw.endpoints, self.prefix, _gateway=self._gw, _fence=term)

    # -- change notification --------------------------------------------------------------------
    def watch(self, on_change: Callable[[], None]) -> Callable[[], None]:
        """Call on_change (from a daemon thread) after anything under the prefix changed.
        Returns a function that stops the watch (and waits for its thread). No change committed
        after watch() returns is missed; it returns once the stream is open (or after `timeout`
        if no member answers yet: the thread keeps trying)."""
        watcher = _Watcher(self, on_change)
        watcher.start()
        watcher.ready.wait(self._gw.timeout)
        return watcher.stop


class _Watcher:
    """A streaming POST /v3/watch in a daemon thread. It resumes from the last etcd revision it
    saw, on whichever member answers, so no change is missed across member failures; if history
    was compacted meanwhile, or it never knew where to resume, it calls on_change once, as the
    caller then reloads everything anyway."""

    # Reconnect if a stream is silent this long: a frozen or cut-off member sends nothing, while a
    # live one sends progress notifications (every 1 s in the lab, see hypetunnel.lab.etcd).
    IDLE = 3.5

    def __init__(self, store: EtcdStore, on_change: Callable[[], None]) -> None:
        self.store = store
        self.on_change = on_change
        self._stop = threading.Event()
        self.ready = threading.Event()  # set once the first stream is open
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self.next_revision: int | None = None
        self._thread = threading.Thread(target=self._run, name="etcd-watch", daemon=True)

    def start(self) -> None:
        try:
            revision, _ = self.store._range(_REVISION)
            self.next_revision = revision + 1
        except StoreUnavailable as e:
            log.warning("etcd watch starts without a revision: %s", e)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._client is not None:
                self._client.close()  # unblocks the reader thread
        self._thread.join(timeout=5)

    def _notify(self) -> None:
        try:
            self.on_change()
        except Exception:
            log.exception("etcd watch callback failed")

    def _run(self) -> None:
        gw = self.store._gw
        failures = 0
        while not self._stop.is_set():
            for endpoint in gw.order():
                if self._stop.is_set():
                    return
                try:
                    self._stream(endpoint)
                    failures = 0
                except (httpx.HTTPError, ValueError, KeyError, RuntimeError) as e:
                    if not self._stop.is_set():
                        log.info("etcd watch on %s ended: %s", endpoint, e)
            failures += 1
            # Every member failed in a row: back off a little rather than spin.
            self._stop.wait(min(0.05 * failures, 1.0))

    def _stream(self, endpoint: str) -> None:
        prefix = self.store.prefix
        create: dict[str, Any] = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix)),
                                  "progress_notify": True}
        if self.next_revision is not None:
            create["start_revision"] = str(self.next_revision)
        timeout = httpx.Timeout(self.store._gw.timeout, read=self.IDLE)
        with self._lock:
            if self._stop.is_set():
                return
            self._client = httpx.Client(timeout=timeout, verify=self.store._gw.verify)
        try:
            # "hasleader" makes a member that lost its raft leader (a partitioned minority) cancel
            # the stream, so we move to a member that still sees the changes.
            with self._client.stream("POST", endpoint + "/v3/watch",
                                     json={"create_request": create},
                                     headers=_Gateway.HEADERS) as reply:
                if reply.status_code != 200:
                    raise RuntimeError(f"HTTP {reply.status_code}")
                for line in reply.iter_lines():
                    if line.strip():
                        self._handle(json.loads(line))
                    if self._stop.is_set():
                        return
        finally:
            with self._lock:
                self._client.close()
                self._client = None

    def _handle(self, message: dict[str, Any]) -> None:
        if "error" in message:
            raise RuntimeError(str(message["error"]))
        result = message.get("result", {})
        if result.get("canceled"):
            compacted = int(result.get("compact_revision", "0"))
            if compacted:  # history we need is gone: resume from now and make the caller reload
                self.next_revision = compacted
                self._notify()
            raise RuntimeError(f"watch canceled: {result.get('cancel_reason', 'compacted')}")
        header_revision = int(result.get("header", {}).get("revision", "0"))
        if result.get("created"):
            self.ready.set()
        if result.get("created") and self.next_revision is None:
            self.next_revision = header_revision + 1
            self._notify()  # we cannot know what happened before: have the caller reload
            return
        events = result.get("events", [])
        if events:
            self.next_revision = max(int(e["kv"]["mod_revision"]) for e in events) + 1
            self._notify()
        elif header_revision and not result.get("created"):
            # A progress notification: nothing of ours changed up to header_revision.
            self.next_revision = max(self.next_revision or 0, header_revision + 1)
