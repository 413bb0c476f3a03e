"""The run spec: pydantic models, component params, path resolution, --set overrides, schema."""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import ConfigDict, Discriminator, Field, Tag, field_validator

from kdcore.errors import SpecError
from kdcore.interfaces import Task, check_rename
from kdcore.registry import Registry

BUILTIN_PREFIX = "builtin:"

#: the validation images when data.val is not given
DEFAULT_VAL = "builtin:photos-val"

#: steps between two resumable checkpoints unless train.checkpoint_every says otherwise
DEFAULT_CHECKPOINT_EVERY = 250


class _Strict(pydantic.BaseModel):
    # strict: "32" is not an integer and "yes" not a boolean (JSON integers still fill float fields)
    model_config = ConfigDict(extra="forbid", strict=True)


class PairedFolders(_Strict):
    """Two folders of images matched by file name: inputs and their targets."""

    input: str = Field(description="folder of input images")
    target: str = Field(description="folder of target images (same file names)")
    input_name: str | None = Field(
        default=None,
        description="how a target's file stem maps to its input's, '{}' standing for the target stem "
        "(e.g. '{}x2': 0001.png <-> 0001x2.png, BasicSR's filename_tmpl). Absent: equal stems, or input "
        "stems that carry the scale (0001x2, 0001_x2) when that pairing is unambiguous",
    )

    @field_validator("input_name")
    @classmethod
    def _check_input_name(cls, value: str | None) -> str | None:
        if value is not None and value.count("{}") != 1:
            raise ValueError(
                f"{value!r} must contain '{{}}' exactly once (where the target's stem goes), e.g. '{{}}x2'"
            )
        return value


#: the keys of a paired source; an object with other keys under data.val names validation sets
PAIRED_KEYS = frozenset(PairedFolders.model_fields)


def is_paired(value: Any) -> bool:
    """Whether a spec value is a paired source ({"input", "target"[, "input_name"]})."""
    if isinstance(value, PairedFolders):
        return True
    return isinstance(value, dict) and bool(value) and set(value) <= PAIRED_KEYS


def _source_tag(value: Any) -> str:
    return "paired" if isinstance(value, (dict, PairedFolders)) else "path"


DataSource = Annotated[
    Annotated[str, Tag("path")] | Annotated[PairedFolders, Tag("paired")],
    Discriminator(_source_tag),
]


def _val_tag(value: Any) -> str:
    if isinstance(value, dict) and not is_paired(value):
        return "sets"
    return _source_tag(value)


ValSource = Annotated[
    Annotated[str, Tag("path")]
    | Annotated[PairedFolders, Tag("paired")]
    | Annotated[dict[str, DataSource], Tag("sets")],
    Discriminator(_val_tag),
]


class DataSpec(_Strict):
    train: DataSource = Field(
        description="'builtin:NAME', a folder of images, or {'input': FOLDER, 'target': FOLDER}"
    )
    val: ValSource = Field(
        default=DEFAULT_VAL,
        description="validation images, same forms as train; or an object naming several validation sets, "
        "each evaluated: {'Set5': 'builtin:set5', 'Set14': 'builtin:set14', 'mine': 'photos/'}",
    )
    degradation: Literal["matlab-bicubic", "torch-bicubic"] = Field(
        default="matlab-bicubic",
        description="how sr inputs are made from high-resolution images, and the bicubic baseline: "
        "'matlab-bicubic' (MATLAB imresize, a=-0.5, antialiased: the convention of published SR results) "
        "or 'torch-bicubic' (PyTorch's antialiased bicubic, kdcore 1.1)",
    )
    patch_size: int = Field(
        default=64, ge=16, description="side of the high-resolution training patch, in pixels"
    )
    batch_size: int = Field(default=8, ge=1, description="patches per training step")
    workers: int | None = Field(
        default=None,
        ge=0,
        description="data-loading worker processes (0: in the training process; absent: chosen from the "
        "cores and the data size)",
    )
    cache: Literal["auto", "memory", "disk"] = Field(
        default="auto",
        description="where decoded training images are held: 'memory' (8-bit images as uint8), or 'disk' "
        "(decoded and degraded once into uncompressed files under $KDCORE_CACHE/pixels, each patch read "
        "from them: memory stays flat for DIV2K-sized sets); 'auto': disk beyond 256 MiB of pixels",
    )
    augment: bool = Field(default=True, description="random flips and 90° rotations")
    unlabeled: list[str] = Field(
        default_factory=list,
        description="folders (or builtin:NAME) of images without ground truth, learnt from the teacher alone; "
        "for sr their crops are extra low-resolution inputs ('zoom-in' data upcycling)",
    )
    unlabeled_ratio: float = Field(
        default=0.5,
        ge=0,
        lt=1,
        description="fraction of each batch drawn from data.unlabeled (when given); round(batch_size × ratio) "
        "must leave at least one labelled and one unlabelled row per batch",
    )


class ComponentSpec(_Strict):
    name: str = Field(description="registered name, or PLUGIN:NAME to pick one of several providers")
    params: dict[str, Any] = Field(default_factory=dict, description="validated by the component's Params")


class StudentSpec(ComponentSpec):
    checkpoint: str | None = Field(
        default=None,
        description="initial weights that must fit the student: a .safetensors file or a run folder (optional)",
    )
    init: str | None = Field(
        default=None,
        description="'teacher': copy every tensor of the (first) teacher whose name and shape match; or a "
        "run folder / .safetensors file to copy matching tensors from (fine-tuning). Absent: random init",
    )
    init_rename: dict[str, str] = Field(
        default_factory=dict,
        description="with student.init: student tensor name -> source tensor name. Each key is a regular "
        "expression matched against the whole student tensor name; the first that matches (in the order "
        "given) gives the source name, its value with \\1… group references expanded; names matching no "
        "key are looked up unchanged. E.g. a 2-block edsr student taking a deeper edsr teacher's last body "
        "conv: {'body\\.2\\.(.*)': 'body.8.\\1'}",
        json_schema_extra={"examples": [{"body\\.2\\.(.*)": "body.8.\\1"}]},
    )

    @field_validator("init_rename")
    @classmethod
    def _check_init_rename(cls, value: dict[str, str]) -> dict[str, str]:
        return check_rename(value)


class TeacherSpec(ComponentSpec):
    checkpoint: str | None = Field(
        default=None, description="the teacher's weights: a .safetensors file or a run folder"
    )
    weight: float = Field(default=1.0, gt=0, description="weight in an ensemble of teachers")


class LossSpec(ComponentSpec):
    weight: float = Field(default=1.0, ge=0, description="weight of this term in the total loss")


class TrainSpec(_Strict):
    steps: int = Field(default=1000, ge=1, description="optimizer steps")
    lr: float = Field(default=5e-4, gt=0, description="peak learning rate")
    seed: int = Field(default=0, ge=0, description="seed of python, numpy, torch and the data order")
    optimizer: str = Field(
        default="adamw", description="a timm optimizer name (timm.optim.list_optimizers())"
    )
    weight_decay: float = Field(default=0.0, ge=0)
    schedule: Literal["cosine", "constant"] = Field(
        default="cosine", description="learning-rate schedule (timm)"
    )
    warmup_steps: int = Field(default=0, ge=0)
    grad_clip: float | None = Field(default=None, gt=0, description="clip the gradient norm to this value")
    eval_every: int = Field(
        default=0, ge=0, description="evaluate on data.val every N steps (0: at the end only)"
    )
    checkpoint_every: int = Field(
        default=DEFAULT_CHECKPOINT_EVERY,
        ge=0,
        description=f"write a resumable checkpoint every N steps (default {DEFAULT_CHECKPOINT_EVERY}, so that even "
        "a killed run can --resume; 0: at the end only)",
    )
    log_every: int = Field(default=10, ge=1, description="append to metrics.jsonl every N steps")
    teacher_cache: Literal["off", "memory", "disk"] = Field(
        default="off",
        description="compute the teacher once per training image and crop/flip its output like each patch "
        "(memory, or disk as half-precision safetensors under $KDCORE_CACHE); feature losses run the teacher live",
    )
    amp: Literal["auto", "off", "bf16"] = Field(
        default="auto", description="bf16 autocast for the student and losses ('auto': on CUDA only)"
    )
    ema: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="decay of an exponential moving average of the student (e.g. 0.999)",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto")
    latency_input: list[Annotated[int, Field(ge=8)]] | None = Field(
        default=None,
        min_length=2,
        max_length=2,
        description="[height, width] of the input on which latency is measured (e.g. [540, 960]: a 1080p "
        "output at ×2); absent: the first validation image",
    )
    onnx_latency: bool = Field(
        default=False,
        description="also export the trained student to ONNX and measure its onnxruntime latency on the "
        "latency probe (summary.json 'onnx_latency_ms'; needs kdcore[export])",
    )
    baseline: Literal["none", "alone"] | list[Literal["alone", "init-only"]] = Field(
        default="none",
        description="also train the same student without the teacher in RUN/alone/ ('alone'; summary.json "
        "gains 'alone' and 'kd_gain_db'); ['alone', 'init-only'] also trains the teacher-initialised "
        "student without teacher losses in RUN/init-only/",
    )

    @property
    def baselines(self) -> list[str]:
        """The baseline runs asked for, in order ('alone', 'init-only')."""
        if isinstance(self.baseline, list):
            return list(dict.fromkeys(self.baseline))
        return [] if self.baseline == "none" else [self.baseline]


def _teacher_tag(value: Any) -> str:
    return "many" if isinstance(value, list) else "one"


TeacherField = Annotated[
    Annotated[TeacherSpec, Tag("one")] | Annotated[list[TeacherSpec], Tag("many")],
    Discriminator(_teacher_tag),
]

_TAGS = {"one", "many", "path", "paired", "sets"}


class RunSpec(_Strict):
    """A whole run: what to build, on which data, how to train, where to write."""

    task: Task
    data: DataSpec
    teacher: TeacherField | None = Field(default=None, description="a teacher, a list of teachers, or absent")
    student: StudentSpec
    losses: list[LossSpec] = Field(min_length=1)
    train: TrainSpec = Field(default_factory=TrainSpec)
    output: str = Field(description="the run folder")
    plugins: dict[str, str] = Field(
        default_factory=dict,
        description="versions of kdcore and of each plugin used (written into a run's spec.json; informational)",
    )

    _base_dir: Path = pydantic.PrivateAttr(default_factory=Path.cwd)

    # -- convenience --------------------------------------------------------------------------
    @property
    def teachers(self) -> list[TeacherSpec]:
        if self.teacher is None:
            return []
        return self.teacher if isinstance(self.teacher, list) else [self.teacher]

    def teacher_location(self, i: int) -> str:
        return f"teacher[{i}]" if isinstance(self.teacher, list) else "teacher"

    def to_json(self) -> dict:
        return self.model_dump(mode="json")


# -- error formatting -------------------------------------------------------------------------


def format_loc(loc: typing.Iterable[Any], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _TAGS:
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_at(model: type[pydantic.BaseModel], loc: typing.Sequence[Any]) -> type[pydantic.BaseModel] | None:
    """The pydantic model whose field set applies at ``loc`` (for 'did you mean')."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or part in _TAGS:
            continue
        if not (isinstance(current, type) and issubclass(current, pydantic.BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _first_model(field.annotation)
    return current if isinstance(current, type) and issubclass(current, pydantic.BaseModel) else None


def _first_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def errors_to_messages(
    exc: pydantic.ValidationError, model: type[pydantic.BaseModel], prefix: str = ""
) -> list[str]:
    messages = []
    for err in exc.errors():
        loc = err["loc"]
        where = format_loc(loc, prefix) or "spec"
        if err["type"] == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            hint = ""
            if parent is not None:
                close = difflib.get_close_matches(str(loc[-1]), list(parent.model_fields), n=1)
                valid = ", ".join(parent.model_fields)
                hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {valid}"
            messages.append(f"{where}: unknown key{hint}")
        elif err["type"] == "missing":
            messages.append(f"{where}: required key is missing")
        else:
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            messages.append(f"{where}: {msg}")
    # a union reports one error per member; keep each message once
    return list(dict.fromkeys(messages))


def spec_error(messages: list[str]) -> SpecError:
    """One SpecError carrying one line per problem (at most 8 shown)."""
    if len(messages) == 1:
        return SpecError(messages[0])
    shown = "\n  ".join(messages[:8])
    more = f"\n  (and {len(messages) - 8} more)" if len(messages) > 8 else ""
    return SpecError(f"the spec has {len(messages)} problems:\n  {shown}{more}")


# -- reading ----------------------------------------------------------------------------------


def read_spec_file(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the spec file: {exc}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(
            f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: the spec must be a JSON object ({{...}}), not {type(raw).__name__}")
    return raw


def load_raw(spec: dict | str | os.PathLike | RunSpec) -> tuple[dict, Path]:
    """The raw spec dict and the folder that relative paths are resolved against."""
    if isinstance(spec, RunSpec):
        return spec.to_json(), spec._base_dir
    if isinstance(spec, dict):
        return copy.deepcopy(spec), Path.cwd()
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        return read_spec_file(path), path.resolve().parent
    raise SpecError(f"a spec is a dict or the path of a JSON file, not {type(spec).__name__}")


# -- overrides --------------------------------------------------------------------------------


def parse_set(items: typing.Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (VALUE parsed as JSON when it is JSON, else kept as a string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.steps=100")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def apply_overrides(raw: dict, overrides: dict[str, Any]) -> dict:
    """Sets dotted keys (``train.steps``, ``losses.0.weight``, ``student.params.x``) in ``raw``."""
    raw = copy.deepcopy(raw)
    for key, value in overrides.items():
        parts = key.replace("__", ".").split(".")
        _check_override_path(key, parts)
        node: Any = raw
        for i, part in enumerate(parts[:-1]):
            nxt = parts[i + 1]
            if isinstance(node, list):
                idx = _index(key, part, node)
                node = node[idx]
                continue
            if part not in node or node[part] is None:
                node[part] = [] if nxt.isdigit() else {}
            node = node[part]
        last = parts[-1]
        if isinstance(node, list):
            node[_index(key, last, node)] = value
        else:
            node[last] = value
    return raw


def _index(key: str, part: str, node: list) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise SpecError(f"--set {key}: {part!r} is not an index of a list of {len(node)} entries")
    return int(part)


def _check_override_path(key: str, parts: list[str]) -> None:
    model: Any = RunSpec
    for i, part in enumerate(parts):
        if part.isdigit():
            continue
        if model is None:
            raise SpecError(f"--set {key}: no such key")
        if model is dict:  # below "params": checked by the component's Params
            return
        if parts[:i] == ["data", "val"] and part not in PAIRED_KEYS:  # a named validation set
            return
        fields = model.model_fields
        if part not in fields:
            close = difflib.get_close_matches(part, list(fields), n=1)
            prefix = ".".join(parts[:i])
            hint = f"; did you mean {'.'.join(filter(None, [prefix, close[0]]))!r}?" if close else ""
            raise SpecError(f"--set {key}: no such key{hint}")
        if part == "params":
            model = dict
            continue
        model = _first_model(fields[part].annotation)


# -- validation -------------------------------------------------------------------------------


def parse(raw: dict, base_dir: Path) -> RunSpec:
    """Schema-level validation (no registry): types, ranges, unknown keys."""
    try:
        spec = RunSpec.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise spec_error(errors_to_messages(exc, RunSpec)) from None
    spec._base_dir = base_dir
    messages = []
    if spec.task.kind == "sr" and spec.data.patch_size % spec.task.scale:
        messages.append(
            f"data.patch_size: {spec.data.patch_size} is not a multiple of task.scale ({spec.task.scale})"
        )
    messages += _check_batch_split(spec.data)
    if spec.student.init is not None and spec.student.checkpoint is not None:
        messages.append("student.init: give student.init or student.checkpoint, not both")
    if spec.student.init_rename and spec.student.init is None:
        messages.append(
            "student.init_rename: renames the tensors student.init copies; add student.init or remove it"
        )
    if spec.student.init == "teacher" and not spec.teachers:
        messages.append(
            "student.init: 'teacher' needs a teacher; add one under 'teacher' or remove student.init"
        )
    if spec.train.baselines and not spec.teachers:
        messages.append(
            "train.baseline: a baseline without the teacher needs a run with a teacher to compare with"
        )
    if "init-only" in spec.train.baselines and spec.student.init != "teacher":
        messages.append('train.baseline: \'init-only\' needs "student": {"init": "teacher"}')
    if messages:
        raise spec_error(messages)
    _resolve_paths(spec)
    return spec


def unlabeled_rows(data: DataSpec) -> int:
    """Unlabelled rows per batch: data.batch_size × data.unlabeled_ratio, rounded (0 without data.unlabeled)."""
    return round(data.batch_size * data.unlabeled_ratio) if data.unlabeled else 0


def _check_batch_split(data: DataSpec) -> list[str]:
    """With data.unlabeled, each batch needs at least one labelled and one unlabelled row."""
    if not data.unlabeled:
        return []
    bs, n_u = data.batch_size, unlabeled_rows(data)
    if 1 <= n_u <= bs - 1:
        return []
    if bs < 2:
        fix = "set data.batch_size to 2 or more (e.g. 2 with data.unlabeled_ratio 0.5)"
    else:
        fix = f"with data.batch_size {bs}, give a data.unlabeled_ratio between {1 / bs:.3g} and {(bs - 1) / bs:.3g}"
    return [
        f"data.unlabeled_ratio: {data.unlabeled_ratio} of data.batch_size {bs} gives {bs - n_u} labelled and "
        f"{n_u} unlabelled rows per batch; each needs at least 1: {fix}"
    ]


#: --set keys whose values are paths (a trailing ".N" index or ".input"/".target" may follow)
PATH_KEYS = re.compile(
    r"^(output|data\.(train|val|unlabeled)(\.\d+|\.input|\.target)?|data\.val\.[^.]+(\.input|\.target)?|"
    r"student\.(checkpoint|init)|teacher(\.\d+)?\.checkpoint)$"
)


def absolute_paths(overrides: dict[str, Any], cwd: Path | None = None) -> dict[str, Any]:
    """Path values of command-line overrides made absolute against the current directory.

    Paths in a spec file are relative to the spec file; paths typed on the command line
    (``--set output=runs/x``) are relative to where the command runs.
    """
    cwd = cwd or Path.cwd()

    def fix(key: str, value: Any) -> Any:
        if isinstance(value, str) and not value.startswith(BUILTIN_PREFIX):
            if key == "student.init" and value == "teacher":
                return value
            return str((cwd / Path(value).expanduser()).resolve())
        if isinstance(value, list):
            return [fix(key, v) for v in value]
        if isinstance(value, dict):  # a paired source, or named validation sets
            return {k: v if k == "input_name" else fix(key, v) for k, v in value.items()}
        return value

    return {
        k: fix(k.replace("__", "."), v) if PATH_KEYS.match(k.replace("__", ".")) else v
        for k, v in overrides.items()
    }


def _resolve(base: Path, value: str) -> str:
    return str((base / Path(value).expanduser()).resolve())


def _resolve_source(base: Path, src: Any) -> Any:
    if isinstance(src, PairedFolders):
        src.input = _resolve(base, src.input)
        src.target = _resolve(base, src.target)
        return src
    if isinstance(src, dict):  # named validation sets
        return {name: _resolve_source(base, value) for name, value in src.items()}
    return src if src.startswith(BUILTIN_PREFIX) else _resolve(base, src)


def _resolve_paths(spec: RunSpec) -> None:
    base = spec._base_dir
    spec.data.train = _resolve_source(base, spec.data.train)
    spec.data.val = _resolve_source(base, spec.data.val)
    spec.data.unlabeled = [
        u if u.startswith(BUILTIN_PREFIX) else _resolve(base, u) for u in spec.data.unlabeled
    ]
    comps: list[StudentSpec | TeacherSpec] = [spec.student, *spec.teachers]
    for comp in comps:
        if comp.checkpoint is not None:
            comp.checkpoint = _resolve(base, comp.checkpoint)
    if spec.student.init not in (None, "teacher"):
        spec.student.init = _resolve(base, spec.student.init)
    spec.output = _resolve(base, spec.output)


# -- JSON schema ------------------------------------------------------------------------------


def json_schema(registry: Registry) -> dict:
    """The spec's JSON Schema, with each installed component's params schema selected by name."""
    schema = RunSpec.model_json_schema()
    defs = schema.setdefault("$defs", {})
    for variant in defs["DataSpec"]["properties"]["val"].get("oneOf", []):
        if variant.get("type") == "object":  # named sets: never the keys of a paired source
            variant["propertyNames"] = {"not": {"enum": sorted(PAIRED_KEYS)}}
    for def_name, kind in (("StudentSpec", "student"), ("TeacherSpec", "teacher"), ("LossSpec", "loss")):
        kinds = ("teacher", "student") if kind == "teacher" else (kind,)
        regs = [r for k in kinds for r in registry.list(k)]
        names = sorted({n for r in regs for n in (r.name, r.qualified_name, *r.aliases)})
        target = defs[def_name]
        target["properties"]["name"] = {
            "type": "string",
            "enum": names,
            "description": target["properties"]["name"].get("description", ""),
        }
        rules: list[dict[str, Any]] = []
        for reg in regs:
            params_schema = _hoist(reg.params_schema(), defs, f"{reg.kind}-{reg.plugin}-{reg.name}-")
            rules.extend(
                {
                    "if": {"properties": {"name": {"const": alias}}, "required": ["name"]},
                    "then": {"properties": {"params": params_schema}},
                }
                for alias in (reg.name, reg.qualified_name, *reg.aliases)
            )
        if rules:
            target["allOf"] = rules
    adapters = {r.name: r.params_schema() for r in registry.list("adapter")}
    schema["x-kdcore-adapters"] = adapters
    return schema


def _hoist(sub: dict, defs: dict, prefix: str) -> dict:
    """Moves a sub-schema's $defs into the top-level $defs under prefixed names."""
    sub = copy.deepcopy(sub)
    local = sub.pop("$defs", {})

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (
                    f"#/$defs/{prefix}{v.split('/')[-1]}"
                    if k == "$ref" and isinstance(v, str)
                    else rewrite(v)
                )
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    for name, value in local.items():
        defs[prefix + name] = rewrite(value)
    return rewrite(sub)
