"""ComfyUI workflow templates: API-format graphs whose nodes are titled to receive a job's values.

A node whose title (``_meta.title`` in an API-format export) holds ``apiframe:NAME`` gets the value
NAME written into its input of the usual name (``apiframe:seed`` sets ``seed``, or ``noise_seed`` on
nodes that have that instead); ``apiframe:NAME=INPUT`` names the input. One title may hold several
bindings separated by spaces. The images of the node titled ``apiframe:output`` (or, without one,
of every ``SaveImage`` node) are the result.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "apiframe:"
DEFAULTS_DIR = Path(__file__).with_name("comfyui_workflows")
OUTPUT = "output"

# Binding name -> the groups of inputs it can set (the first group the node has all of is used).
BINDINGS: dict[str, tuple[tuple[str, ...], ...]] = {
    "prompt": (("text",), ("prompt",)),
    "negative": (("text",), ("prompt",)),
    "seed": (("seed",), ("noise_seed",)),
    "size": (("width", "height"),),
    "batch": (("batch_size",), ("amount",)),
    "image": (("image",),),
    "mask": (("image",),),
    "denoise": (("denoise",),),
    "scale": (("scale_by",),),
    "pad": (("left", "top", "right", "bottom"),),
    "checkpoint": (("ckpt_name",),),
    "upscale_model": (("model_name",),),
    OUTPUT: ((),),
}

# The bindings each operation's template must have (the result node is needed by all).
REQUIRED: dict[str, tuple[str, ...]] = {
    "imagine": ("prompt", "seed", "size", "batch"),
    "variation": ("image", "seed", "batch"),
    "blend": ("image", "seed", "batch"),
    "upscale": ("image",),
    "outpaint": ("image", "pad", "seed", "batch"),
    "inpaint": ("image", "mask", "seed", "batch"),
}
OPERATIONS = tuple(REQUIRED)


class TemplateError(ValueError):
    """A workflow template cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Target:
    """One place a binding writes to: a node and the inputs it sets there."""

    node: str
    inputs: tuple[str, ...]


@dataclass
class Template:
    """One operation's workflow, its bindings found and checked."""

    operation: str
    source: str
    graph: dict[str, Any]
    bindings: dict[str, list[Target]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)

    def has(self, name: str) -> bool:
        """Whether the workflow has a node bound to ``name``."""
        return bool(self.bindings.get(name))

    def classes(self) -> set[str]:
        """The node classes the workflow uses."""
        return {node["class_type"] for node in self.graph.values()}

    def fill(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of the graph with each bound input set; a tuple value sets a group of inputs."""
        graph = copy.deepcopy(self.graph)
        for name, value in values.items():
            if value is None:
                continue
            parts = value if isinstance(value, tuple) else (value,)
            for target in self.bindings.get(name, []):
                for input_name, part in zip(target.inputs, parts, strict=True):
                    graph[target.node]["inputs"][input_name] = part
        return graph

    def value(self, name: str) -> Any:
        """The value the template itself holds in its first ``name`` binding (None if unbound)."""
        targets = self.bindings.get(name)
        if not targets or not targets[0].inputs:
            return None
        return self.graph[targets[0].node]["inputs"][targets[0].inputs[0]]


def parse(operation: str, source: str, text: str) -> Template:
    """A template from API-format JSON, or TemplateError saying what is wrong with it."""
    try:
        graph = json.loads(text)
    except ValueError as exc:
        raise TemplateError(f"{source} is not valid JSON ({exc}).") from None
    if isinstance(graph, dict) and isinstance(graph.get("nodes"), list) and "links" in graph:
        raise TemplateError(
            f"{source} is a workflow in ComfyUI's UI format; save it with 'Export (API)' instead."
        )
    if not isinstance(graph, dict) or not graph:
        raise TemplateError(f"{source} must be a JSON object of nodes (ComfyUI's API format).")
    template = Template(operation, source, graph)
    for node_id, node in graph.items():
        _check_node(source, node_id, node, graph)
        title = (node.get("_meta") or {}).get("title") or ""
        for token in str(title).split():
            if token.startswith(PREFIX):
                _bind(template, node_id, node, token[len(PREFIX) :])
    template.outputs = [target.node for target in template.bindings.get(OUTPUT, [])] or [
        node_id for node_id, node in graph.items() if node["class_type"] == "SaveImage"
    ]
    missing = [name for name in REQUIRED[operation] if not template.has(name)]
    if missing:
        names = ", ".join(PREFIX + name for name in missing)
        raise TemplateError(
            f"{source} lacks the binding(s) {operation} needs: {names} (title a node so, e.g. "
            f"'{PREFIX}{missing[0]}')."
        )
    if not template.outputs:
        raise TemplateError(f"{source} has no result node: title one '{PREFIX}{OUTPUT}' (a SaveImage node).")
    return template


def _check_node(source: str, node_id: str, node: Any, graph: dict[str, Any]) -> None:
    if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
        raise TemplateError(f"{source}: node {node_id} has no class_type (is this ComfyUI's API format?).")
    inputs = node.get("inputs")
    if not isinstance(inputs, dict):
        raise TemplateError(f"{source}: node {node_id} ({node['class_type']}) has no inputs object.")
    for name, value in inputs.items():
        if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
            if str(value[0]) not in graph:
                raise TemplateError(
                    f"{source}: input {name!r} of node {node_id} links to node {value[0]}, which is missing."
                )


def _bind(template: Template, node_id: str, node: dict[str, Any], spec: str) -> None:
    name, _, explicit = spec.partition("=")
    where = f"{template.source}: node {node_id} ({node['class_type']})"
    if name not in BINDINGS:
        known = ", ".join(PREFIX + known for known in BINDINGS)
        raise TemplateError(f"{where} is titled {PREFIX}{spec}, an unknown binding; known: {known}.")
    inputs = node["inputs"]
    if explicit:
        groups: tuple[tuple[str, ...], ...] = (tuple(explicit.split(",")),)
    else:
        groups = BINDINGS[name]
    chosen = next((group for group in groups if all(part in inputs for part in group)), None)
    if chosen is None or len(chosen) != len(BINDINGS[name][0]):
        wanted = " or ".join("+".join(group) for group in groups)
        raise TemplateError(
            f"{where} is titled {PREFIX}{name} but has no input {wanted} to set "
            f"(name one: {PREFIX}{name}=INPUT)."
        )
    template.bindings.setdefault(name, []).append(Target(node_id, chosen))


def load(directory: str | None, upscale_model: bool = False) -> dict[str, Template]:
    """Each operation's template: from ``directory`` where it has ``OPERATION.json``, else the default."""
    user_dir = Path(directory) if directory else None
    if user_dir is not None and not user_dir.is_dir():
        raise TemplateError(f"APIFRAME_COMFYUI_WORKFLOWS: {directory} is not a directory.")
    if user_dir is not None:
        for path in sorted(user_dir.glob("*.json")):
            if path.stem not in OPERATIONS:
                log.warning("comfyui: %s is unused (workflows are named %s.json)", path, "|".join(OPERATIONS))
    templates = {}
    for operation in OPERATIONS:
        path = user_dir / f"{operation}.json" if user_dir is not None else None
        if path is None or not path.is_file():
            name = "upscale-model" if operation == "upscale" and upscale_model else operation
            path = DEFAULTS_DIR / f"{name}.json"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(f"{path} cannot be read ({exc}).") from None
        templates[operation] = parse(operation, str(path), text)
    return templates
