"""The model versions one agent holds: persisted in its own store, the most recently used in memory.

Staging a version checks it completely (size, sha256, ONNX load, signature, agent, a probe
inference) before it is persisted atomically and made ready; anything wrong raises
ArtifactError and changes nothing. Versions are immutable: the same number with other bytes
is refused. Memory keeps `keep` versions, evicting the least recently used, so the version
the coordinator is using is never the one evicted by a new stage. A persisted version that is
not in memory (a restarted agent loads only the newest few) is loaded when first asked for.

A stored version that cannot be loaded (its blob fails its sha256: a flipped bit on disk; its
files unreadable) is *broken*: checked once, remembered with the reason, reported in GetInfo,
and refused at once when asked for, never re-read per request. Staging the same version again
(`tactical rollout --version V`) replaces the broken copy: the bytes must still match the
version's manifest, so immutability holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict

from agents.serving.artifact import ArtifactError, Manifest
from agents.serving.model_store import ModelStore, artifact_names
from agents.serving.runtime import ActorRunner

log = logging.getLogger(__name__)


class BrokenVersion(LookupError):
    """A version this agent stores but cannot serve; the message says why."""


class VersionRegistry:
    def __init__(self, agent: str, store: ModelStore, keep: int):
        self.agent = agent
        self.store = store
        self.keep = keep
        self._runners: OrderedDict[int, ActorRunner] = OrderedDict()  # least recently used first
        self._loading: dict[int, asyncio.Future] = {}
        self._broken: dict[int, str] = {}  # version -> why it cannot be served

    def loaded(self) -> list[int]:
        return sorted(self._runners)

    def broken(self) -> dict[int, str]:
        return dict(self._broken)

    def sha256(self) -> dict[int, str]:
        return {v: r.manifest.sha256 for v, r in self._runners.items()}

    def feature_references(self) -> dict[int, str]:
        """Each loaded version's training reference for input drift, as JSON (versions that recorded one)."""
        return {v: json.dumps(r.manifest.feature_reference) for v, r in self._runners.items()
                if r.manifest.feature_reference is not None}

    def feature_settings(self) -> dict[int, str]:
        """Each loaded version's feature settings, as JSON (versions that recorded them)."""
        return {v: json.dumps(r.manifest.feature_settings, sort_keys=True) for v, r in self._runners.items()
                if r.manifest.feature_settings is not None}

    def get(self, version: int) -> ActorRunner | None:
        runner = self._runners.get(version)
        if runner is not None:
            self._runners.move_to_end(version)
        return runner

    def _load(self, version: int) -> ActorRunner:
        """Read, verify and load a stored version; a failure marks it broken (once) and raises BrokenVersion."""
        try:
            runner = ActorRunner(*self.store.read_artifact(version, self.agent))
        except (ArtifactError, OSError) as exc:
            reason = str(exc) if isinstance(exc, ArtifactError) else f"cannot read it: {exc}"
            self._broken[version] = reason
            log.error("stored version %d cannot be served: %s (stage it again to repair: tactical rollout "
                      "--version %d)", version, reason, version)
            raise BrokenVersion(f"version {version} is broken on agent {self.agent}: {reason}") from None
        self._broken.pop(version, None)
        return runner

    async def load_stored(self, version: int) -> ActorRunner | None:
        """A persisted version not in memory: load it off the event loop; None if it is not persisted.

        Raises BrokenVersion for a stored version that cannot be loaded (checked once, then remembered).
        """
        runner = self.get(version)
        if runner is not None:
            return runner
        if version in self._broken:
            raise BrokenVersion(f"version {version} is broken on agent {self.agent}: {self._broken[version]}")
        if version not in self.store.versions():
            return None
        if version not in self._loading:  # one load per version, however many requests wait for it
            self._loading[version] = asyncio.ensure_future(asyncio.to_thread(self._load, version))
        try:
            runner = await asyncio.shield(self._loading[version])
        finally:
            self._loading.pop(version, None)
        if self.get(version) is None:
            self._hold(version, runner)
            log.info("loaded persisted version %d on demand", version)
        return self.get(version)

    def _hold(self, version: int, runner: ActorRunner) -> None:
        self._runners[version] = runner
        self._runners.move_to_end(version)
        while len(self._runners) > self.keep:
            evicted, _ = self._runners.popitem(last=False)
            log.info("version %d evicted from memory (still on disk)", evicted)

    def load_persisted(self) -> list[int]:
        """Load the newest persisted versions that pass every check; broken ones are skipped, named, remembered."""
        self.store.sweep()
        loaded = []
        for version in reversed(self.store.versions()):
            if len(loaded) == self.keep:
                break
            try:
                self._hold(version, self._load(version))
                loaded.append(version)
            except BrokenVersion:
                continue
        # Oldest first in LRU order, so the newest is the last to be evicted.
        for version in sorted(loaded):
            self._runners.move_to_end(version)
        return sorted(loaded)

    def import_from(self, source: ModelStore, count: int) -> list[int]:
        """Stage the newest `count` versions of another store (the trainer's) that this agent lacks.

        One that cannot be read or stored (a damaged file, a full disk) is logged with the path and
        skipped: the agent starts on what it has.
        """
        imported = []
        for version in source.versions()[-count:]:
            if version in self.store.versions():
                continue
            try:
                blob, manifest = source.read_artifact(version, self.agent)
                self.stage(version, blob, manifest)
                imported.append(version)
            except ArtifactError as exc:
                log.error("not importing version %d from %s: %s", version, source.root, exc)
            except OSError as exc:
                log.error("not importing version %d from %s: %s (%s)", version, source.root, exc.strerror or exc,
                          exc.filename or self.store.root)
        return imported

    def prepare(self, version: int, blob: bytes, manifest: Manifest) -> tuple[ActorRunner, bool]:
        """Verify and persist a version without touching what is served (safe to run in a thread).

        Returns the loaded runner and whether the version was already staged with these bytes.
        Raises ArtifactError for anything wrong with the upload, OSError when the store cannot be written.
        """
        if manifest.agent != self.agent:
            raise ArtifactError(f"artifact is for agent {manifest.agent!r}, this is agent {self.agent!r}")
        if manifest.version != version:
            raise ArtifactError(f"manifest says version {manifest.version}, the upload says {version}")
        if version in self.store.versions():
            try:
                stored_blob, stored = self.store.read_artifact(version, self.agent)
            except (ArtifactError, OSError) as exc:
                recorded = self.store.manifest(version, self.agent)
                if recorded is not None and recorded.sha256 != manifest.sha256:
                    raise ArtifactError(f"version {version} is stored broken, and the upload is not the version "
                                        f"its manifest records (sha256 {recorded.sha256[:12]}...)") from None
                log.warning("version %d is stored broken (%s): replacing it with the bytes staged now", version, exc)
                self.store.discard(version)
            else:
                if stored.sha256 != manifest.sha256:
                    raise ArtifactError(f"version {version} is already staged with sha256 {stored.sha256[:12]}...; "
                                        f"versions are immutable, publish a new version number")
                runner = self._runners.get(version)
                return (runner or ActorRunner(stored_blob, stored)), True
        start = time.perf_counter()
        runner = ActorRunner(blob, manifest)  # every check happens here, before anything is written
        blob_name, manifest_name = artifact_names(self.agent)
        self.store.write_version(version, {blob_name: blob, manifest_name: manifest.to_json().encode()})
        log.info("staged version %d (sha256 %s..., %d bytes) in %.0f ms", version, manifest.sha256[:12],
                 len(blob), (time.perf_counter() - start) * 1e3)
        return runner, False

    def hold(self, version: int, runner: ActorRunner) -> None:
        """Make a prepared version ready to serve (on the serving thread)."""
        self._broken.pop(version, None)
        self._hold(version, runner)

    def stage(self, version: int, blob: bytes, manifest: Manifest) -> bool:
        """prepare + hold; return True when it was already staged (same bytes)."""
        runner, already = self.prepare(version, blob, manifest)
        self.hold(version, runner)
        return already
