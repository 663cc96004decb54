"""Pipelines of notebooks: the ``pipeline.yaml`` file, the same as a Python API, and the checks
made before any kernel starts (cycles, missing notebooks and inputs, unknown parameters).

```yaml
name: example                      # default: the file's folder name
experiment: example-pipeline       # default: "pipeline-<name>"
steps:
  load:
    notebook: load.ipynb           # relative to this file
    parameters: {rows: 500}
    inputs: {raw: data/raw.csv}    # a file, a data version NAME@k, or another step's output
    outputs: {table: out/table.csv}
  train:
    notebook: train.ipynb
    inputs: {table: out/table.csv} # the same path as load's output: train runs after load
```

An input is another step's output when its path is that output's path, or when written
``{step: load, output: table}``. An input or output whose name the notebook declares in its
``parameters`` cell is injected there as the path (as a string).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nbmlops.core.pipeline import notebook as nbfile
from nbmlops.core.pipeline import params as P
from nbmlops.exceptions import PipelineError

_STEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_DATA_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*@([1-9][0-9]*|latest)$")
_STEP_KEYS = {"notebook", "parameters", "inputs", "outputs", "needs", "cache", "timeout", "kernel"}
_TOP_KEYS = {"name", "experiment", "kernel", "steps"}


@dataclass
class Input:
    name: str
    kind: str  # "file" | "data" | "step"
    path: Path | None = None  # file (absolute) or the producing step's output path
    ref: str | None = None  # data version NAME@k
    step: str | None = None  # producing step
    output: str | None = None


@dataclass
class Step:
    name: str
    notebook: str | Path
    parameters: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)  # name -> path
    needs: list[str] = field(default_factory=list)
    cache: bool = True
    timeout: float | None = None
    kernel: str | None = None
    # resolved by Pipeline.validate
    notebook_path: Path = field(default=Path(), init=False)
    resolved_inputs: dict[str, Input] = field(default_factory=dict, init=False)
    output_paths: dict[str, Path] = field(default_factory=dict, init=False)
    declared: P.NotebookParameters | None = field(default=None, init=False)
    nb: dict[str, Any] = field(default_factory=dict, init=False)

    @property
    def upstream(self) -> list[str]:
        ups = [i.step for i in self.resolved_inputs.values() if i.kind == "step" and i.step]
        return sorted({*ups, *self.needs})

    def injected(self) -> dict[str, Any]:
        """The parameters papermill writes: the step's own, then paths the notebook declares."""
        out = dict(self.parameters)
        assert self.declared is not None
        for name, inp in self.resolved_inputs.items():
            if name in self.declared.parameters and name not in out:
                out[name] = inp.ref if inp.kind == "data" and inp.path is None else str(inp.path)
        for name, path in self.output_paths.items():
            if name in self.declared.parameters and name not in out:
                out[name] = str(path)
        return out


@dataclass
class Pipeline:
    steps: dict[str, Step]
    root: Path = field(default_factory=Path.cwd)  # relative paths are relative to this folder
    name: str | None = None
    experiment: str | None = None
    kernel: str | None = None
    source: Path | None = None  # the pipeline file
    order: list[str] = field(default_factory=list, init=False)
    _validated: bool = field(default=False, init=False)

    @property
    def where(self) -> str:
        return str(self.source) if self.source else f"pipeline {self.name or ''}".strip()

    @property
    def display_name(self) -> str:
        if self.name:
            return str(self.name)
        folder = self.source.parent.name if self.source else ""
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", folder).strip("-.") or "pipeline"

    @property
    def experiment_name(self) -> str:
        return self.experiment or f"pipeline-{self.display_name}"

    # --- checks -------------------------------------------------------------------------------
    def validate(self, data_store: Any = None) -> Pipeline:
        """Resolve paths and check everything; raises PipelineError naming the first problem."""
        import networkx as nx

        if not self.steps:
            raise PipelineError("The pipeline has no steps", where=self.where, fix="Add steps:")
        if self.name is not None and not _STEP_NAME.match(str(self.name)):
            # the name names files under the project's home
            raise PipelineError(
                f"Pipeline name {self.name!r} is not valid",
                where=self.where,
                fix="Use letters, digits, '_', '-' and '.' (starting with a letter or digit).",
            )
        root = self.root.resolve()
        producers: dict[Path, tuple[str, str]] = {}
        for step in self.steps.values():
            where = f"{self.where}, step {step.name!r}"
            if not isinstance(step.name, str) or not _STEP_NAME.match(step.name):
                raise PipelineError(
                    f"Step name {step.name!r} is not valid",
                    where=self.where,
                    fix="Use letters, digits, '_', '-' and '.' (starting with a letter or digit).",
                )
            step.notebook_path = (root / Path(step.notebook)).resolve()
            try:
                step.nb = nbfile.read_json(step.notebook_path)
            except PipelineError as err:
                raise PipelineError(err.what, where=where, fix=err.fix) from None
            step.declared = _declared(step)
            step.parameters = P.validate(step.parameters, step.declared, where=where)
            nbfile.kernel_spec(step.kernel or self.kernel or nbfile.kernel_name_of(step.nb))
            if step.timeout is not None and (
                not isinstance(step.timeout, (int, float)) or step.timeout <= 0
            ):
                raise PipelineError("timeout must be a positive number of seconds", where=where)
            for oname, opath in step.outputs.items():
                if not isinstance(opath, (str, Path)) or not str(opath):
                    raise PipelineError(f"Output {oname!r} must be a path", where=where)
                resolved = (root / Path(opath)).resolve()
                if resolved in producers:
                    other = producers[resolved]
                    raise PipelineError(
                        f"Output {oname!r} ({opath}) is also output {other[1]!r} of step "
                        f"{other[0]!r}",
                        where=where,
                        fix="Give each step its own output files.",
                    )
                producers[resolved] = (step.name, oname)
                step.output_paths[oname] = resolved
        for step in self.steps.values():
            where = f"{self.where}, step {step.name!r}"
            for need in step.needs:
                if need not in self.steps:
                    raise PipelineError(
                        f"needs: {need!r} is not a step of this pipeline "
                        f"(steps: {', '.join(self.steps)})",
                        where=where,
                    )
            for iname, spec in step.inputs.items():
                step.resolved_inputs[iname] = self._input(step, iname, spec, root, producers)
            for iname, inp in step.resolved_inputs.items():
                if inp.kind == "data":
                    _check_data_ref(inp, data_store, where)
                elif inp.kind == "file" and not (inp.path and inp.path.is_file()):
                    raise PipelineError(
                        f"Input {iname!r}: {inp.path} does not exist and no step produces it",
                        where=where,
                        fix="Create the file, fix the path, or add the step that writes it "
                        "(with the same path under its outputs).",
                    )
        graph = nx.DiGraph()
        graph.add_nodes_from(self.steps)
        for step in self.steps.values():
            for up in step.upstream:
                graph.add_edge(up, step.name)
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            cycle = None
        if cycle:
            names = [a for a, _ in cycle] + [cycle[0][0]]
            raise PipelineError(
                f"The steps form a cycle: {' -> '.join(names)}",
                where=self.where,
                fix="A step cannot depend, directly or through others, on its own outputs.",
            )
        # Topological order, ties broken by the order steps are written in.
        position = {name: i for i, name in enumerate(self.steps)}
        self.order = list(nx.lexicographical_topological_sort(graph, key=lambda n: position[n]))
        self._validated = True
        return self

    def _input(
        self, step: Step, iname: str, spec: Any, root: Path, producers: dict[Path, tuple[str, str]]
    ) -> Input:
        where = f"{self.where}, step {step.name!r}"
        if isinstance(spec, dict):
            unknown = set(spec) - {"step", "output"}
            if unknown or "step" not in spec or "output" not in spec:
                raise PipelineError(
                    f"Input {iname!r} must be a path, a data version NAME@k, or "
                    f"{{step: NAME, output: KEY}}; got {spec!r}",
                    where=where,
                )
            other = self.steps.get(spec["step"])
            if other is None:
                raise PipelineError(
                    f"Input {iname!r} names step {spec['step']!r}, which is not in the pipeline "
                    f"(steps: {', '.join(self.steps)})",
                    where=where,
                )
            if spec["output"] not in other.output_paths:
                raise PipelineError(
                    f"Input {iname!r}: step {other.name!r} has no output {spec['output']!r} "
                    f"(its outputs: {', '.join(other.output_paths) or '(none)'})",
                    where=where,
                )
            return Input(
                iname,
                "step",
                path=other.output_paths[spec["output"]],
                step=other.name,
                output=spec["output"],
            )
        if not isinstance(spec, (str, Path)) or not str(spec):
            raise PipelineError(f"Input {iname!r} must be a path, got {spec!r}", where=where)
        path = (root / Path(spec)).resolve()
        if path in producers:
            prod_step, prod_out = producers[path]
            if prod_step == step.name:
                raise PipelineError(
                    f"Input {iname!r} is the step's own output {prod_out!r}", where=where
                )
            return Input(iname, "step", path=path, step=prod_step, output=prod_out)
        if isinstance(spec, str) and _DATA_REF.match(spec) and not path.exists():
            return Input(iname, "data", ref=spec)
        return Input(iname, "file", path=path)

    def downstream(self, names: set[str]) -> set[str]:
        import networkx as nx

        graph = nx.DiGraph()
        for step in self.steps.values():
            for up in step.upstream:
                graph.add_edge(up, step.name)
        out: set[str] = set()
        for n in names:
            if n in graph:
                out |= nx.descendants(graph, n)
        return out


def _declared(step: Step) -> P.NotebookParameters:
    return P.read_parameters(step.notebook_path, step.nb)


def _check_data_ref(inp: Input, data_store: Any, where: str) -> None:
    if data_store is None:
        return
    from nbmlops.exceptions import NbmlopsError

    try:
        version = data_store.get(inp.ref)
    except NbmlopsError as err:
        raise PipelineError(
            f"Input {inp.name!r}: data version {inp.ref!r} is not in the data store: {err.what}",
            where=where,
            fix=err.fix or "List versions with `nbmlops data ls`.",
        ) from None
    inp.ref = version.ref  # NAME@latest -> NAME@k, fixed for this run


# --- loading ------------------------------------------------------------------------------
def load_pipeline(path: str | Path) -> Pipeline:
    """Read and check ``pipeline.yaml`` (structure here; notebooks etc. in ``validate``)."""
    p = Path(path)
    if not p.is_file():
        raise PipelineError(
            f"Pipeline file {str(path)!r} does not exist",
            where=str(p.resolve().parent),
            fix="Pass the path of a pipeline.yaml.",
        )
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PipelineError(
            f"Pipeline file {str(path)!r} is not valid YAML{line}: "
            f"{getattr(err, 'problem', None) or err}",
            fix="Check the indentation and quoting there.",
        ) from None
    return pipeline_from_dict(data, root=p.resolve().parent, source=p.resolve())


def pipeline_from_dict(data: Any, root: Path, source: Path | None = None) -> Pipeline:
    where = str(source) if source else "pipeline"
    if not isinstance(data, dict):
        raise PipelineError(
            f"A pipeline must be a mapping with a 'steps:' key, got {type(data).__name__}",
            where=where,
        )
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise PipelineError(
            f"Unknown key(s) {', '.join(sorted(map(str, unknown)))} at the top of the pipeline "
            f"(known: {', '.join(sorted(_TOP_KEYS))})",
            where=where,
        )
    raw_steps = data.get("steps")
    if isinstance(raw_steps, list):
        as_map: dict[str, Any] = {}
        for i, entry in enumerate(raw_steps):
            if not isinstance(entry, dict) or "name" not in entry:
                raise PipelineError(f"steps[{i}] needs a 'name:'", where=where)
            entry = dict(entry)
            as_map[str(entry.pop("name"))] = entry
        raw_steps = as_map
    if not isinstance(raw_steps, dict) or not raw_steps:
        raise PipelineError(
            "The pipeline needs 'steps:', a mapping of step names to their notebook etc.",
            where=where,
        )
    steps: dict[str, Step] = {}
    for name, body in raw_steps.items():
        swhere = f"{where}, step {name!r}"
        if isinstance(body, str):
            body = {"notebook": body}
        if not isinstance(body, dict):
            raise PipelineError(f"A step must be a mapping, got {body!r}", where=swhere)
        bad = set(body) - _STEP_KEYS
        if bad:
            raise PipelineError(
                f"Unknown key(s) {', '.join(sorted(map(str, bad)))} "
                f"(known: {', '.join(sorted(_STEP_KEYS))})",
                where=swhere,
            )
        if "notebook" not in body:
            raise PipelineError("The step has no 'notebook:'", where=swhere)
        for key in ("parameters", "inputs", "outputs"):
            if body.get(key) is not None and not isinstance(body[key], dict):
                raise PipelineError(f"'{key}:' must be a mapping of names to values", where=swhere)
        needs = body.get("needs") or []
        if isinstance(needs, str):
            needs = [needs]
        steps[str(name)] = Step(
            name=str(name),
            notebook=body["notebook"],
            parameters=dict(body.get("parameters") or {}),
            inputs=dict(body.get("inputs") or {}),
            outputs=dict(body.get("outputs") or {}),
            needs=[str(n) for n in needs],
            cache=bool(body.get("cache", True)),
            timeout=body.get("timeout"),
            kernel=body.get("kernel"),
        )
    return Pipeline(
        steps=steps,
        root=root,
        name=data.get("name"),
        experiment=data.get("experiment"),
        kernel=data.get("kernel"),
        source=source,
    )
