"""The Manifest record: `submissions/<name>/manifest.json`, what a submission was made from.

Written by the submit stage; read by the score stage (which format the folder holds) and by the
report (the blend to rebuild). `version` is the record's version: a newer file is refused.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from workbench.errors import DataError
from workbench.io import load_json, write_json
from workbench.records.ensemble import EnsembleSpec
from workbench.records.tasks import TASKS

FILE = "manifest.json"
MANIFEST_VERSION = 1  # files from before the field existed are version 1 too


@dataclass(frozen=True)
class Manifest:
    """manifest.json of a submission folder.

    Attributes:
        name, format: the submission's name and leaderboard format.
        created: ISO time (UTC); data: the dataset.yaml.
        members: the test-split cache entry of each member [{"member", "run", "tta", "cache",
            "checkpoint_sha256", "data_sha256"}]; val_caches: the same for val.
        blend: task -> {"members": [RUN or RUN@TTA], "weights": [w]}.
        fusion: task -> how it was fused ("det": the FusionConfig as a dict).
        val: row (member label or "blend") -> its val metrics.
        files: file name -> sha256 of every file written (the zip too).
        counts: {"cls", "det_boxes", "seg"}.
        det_image_ids: the COCO image list the detection ids came from (None: the format names images).
        polygon_roundtrip_miou: what the organisers' fill of the written polygons keeps (allinone-json).
        version: MANIFEST_VERSION.
    """

    name: str
    format: str
    created: str = ""
    data: str = ""
    members: list = field(default_factory=list)
    val_caches: list = field(default_factory=list)
    blend: dict = field(default_factory=dict)
    fusion: dict = field(default_factory=dict)
    val: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    det_image_ids: str | None = None
    polygon_roundtrip_miou: float | None = None
    version: int = MANIFEST_VERSION

    def ensemble_spec(self, source: str | Path = FILE) -> EnsembleSpec:
        """The EnsembleSpec the submission was blended with (from `blend` and `fusion`).

        Raises:
            DataError: the manifest holds no complete blend (names `source`).
        """
        try:
            tasks = {}
            for t in TASKS:
                entry = self.blend[t]
                tasks[t] = {"members": [{"member": ref, "weight": w}
                                        for ref, w in zip(entry["members"], entry["weights"])]}
            tasks["det"]["fusion"] = dict(self.fusion["det"])
        except (KeyError, TypeError) as e:
            raise DataError(source, f"manifest has no blend to rebuild ({type(e).__name__}: {e})") from None
        return EnsembleSpec.from_dict({"tasks": tasks}, str(source))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str | Path = FILE) -> "Manifest":
        """Build from manifest.json's content; unknown keys are ignored.

        Raises:
            DataError: not an object, no name or format, or a newer version (names `source`).
        """
        if not isinstance(d, dict):
            raise DataError(source, "manifest.json is not an object")
        if not isinstance(d.get("version", 1), int) or d.get("version", 1) > MANIFEST_VERSION:
            raise DataError(source, f"manifest version {d.get('version')!r} is newer than this workbench reads "
                                    f"({MANIFEST_VERSION})")
        missing = [k for k in ("name", "format") if k not in d]
        if missing:
            raise DataError(source, f"manifest.json lacks {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def read(cls, folder: str | Path) -> "Manifest":
        """Read `folder`/manifest.json.

        Raises:
            DataError: missing, not JSON, or not a manifest (the message names the file).
        """
        path = Path(folder) / FILE
        if not path.is_file():
            raise DataError(path, "submission folder has no manifest.json")
        return cls.from_dict(load_json(path), path)

    def write(self, folder: str | Path) -> None:
        """Write `folder`/manifest.json atomically."""
        write_json(Path(folder) / FILE, self.to_dict())
