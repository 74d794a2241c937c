"""A small kustomize builder for the tests of deploy/.

No kustomize implementation installs from PyPI here (``kustomize`` on PyPI is
a different tool, ``pykustomize`` needs Python 3.14), so the tests build the
overlays with this one. It implements only what deploy/ uses, and refuses
every other kustomization field, so a manifest cannot rely on something that
this builder silently ignores:

- ``resources``: YAML files (several documents each) and directories with a
  kustomization.yaml, built recursively;
- ``namespace``: set on every namespaced object (not on cluster-scoped kinds);
- ``patches``: JSON 6902 patches (a YAML list of ops: add, replace, remove)
  with a ``target`` kind and name, and strategic-merge patches (a partial
  object; maps merge, lists of maps with a ``name`` merge by name, other
  lists are replaced, ``null`` deletes), from ``patch`` or ``path``;
- ``configMapGenerator`` with ``files`` and ``literals``, and
  ``options.disableNameSuffixHash: true`` (name hashes are not implemented)
  and ``options.labels``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
}
_FIELDS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "patches",
    "configMapGenerator",
}


class KustomizeError(Exception):
    pass


def build(directory: Path) -> list[Obj]:
    """The objects ``kubectl kustomize directory`` would print, in order."""
    directory = Path(directory)
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(spec) - _FIELDS)
    if unknown:
        raise KustomizeError(f"{path}: unsupported field(s) {', '.join(unknown)}")
    objects: list[Obj] = []
    for entry in spec.get("resources") or []:
        target = (directory / entry).resolve()
        if target.is_dir():
            objects += build(target)
        elif target.is_file():
            objects += load_documents(target)
        else:
            raise KustomizeError(f"{path}: resource {entry!r} does not exist")
    for gen in spec.get("configMapGenerator") or []:
        objects.append(_config_map(directory, gen, path))
    for patch in spec.get("patches") or []:
        _apply_patch(objects, directory, patch, path)
    namespace = spec.get("namespace")
    if namespace:
        for obj in objects:
            if obj.get("kind") not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = namespace
    _check_unique(objects, path)
    return objects


def load_documents(path: Path) -> list[Obj]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "metadata" not in d:
            raise KustomizeError(f"{path}: a document is not a Kubernetes object")
    return docs


def _config_map(directory: Path, gen: Obj, where: Path) -> Obj:
    options = gen.get("options") or {}
    if options.get("disableNameSuffixHash") is not True:
        raise KustomizeError(
            f"{where}: configMapGenerator {gen.get('name')!r} needs "
            "options.disableNameSuffixHash: true (hashes are not implemented)"
        )
    unknown = sorted(set(gen) - {"name", "files", "literals", "options"})
    unknown += sorted(set(options) - {"disableNameSuffixHash", "labels"})
    if unknown:
        raise KustomizeError(f"{where}: unsupported generator field(s) {unknown}")
    data: dict[str, str] = {}
    for item in gen.get("files") or []:
        key, _, file = item.rpartition("=")
        file_path = directory / file
        data[key or Path(file).name] = file_path.read_text()
    for item in gen.get("literals") or []:
        key, _, value = item.partition("=")
        data[key] = value
    meta: Obj = {"name": gen["name"]}
    if options.get("labels"):
        meta["labels"] = dict(options["labels"])
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def _apply_patch(objects: list[Obj], directory: Path, entry: Obj, where: Path) -> None:
    unknown = sorted(set(entry) - {"patch", "path", "target"})
    if unknown:
        raise KustomizeError(f"{where}: unsupported patch field(s) {unknown}")
    text = entry.get("patch")
    if text is None:
        text = (directory / entry["path"]).read_text()
    body = yaml.safe_load(text)
    target = entry.get("target") or {}
    if isinstance(body, list):
        if not target:
            raise KustomizeError(f"{where}: a JSON 6902 patch needs a target")
        matched = _select(objects, target.get("kind"), target.get("name"))
        for obj in matched:
            _json6902(obj, body, where)
        return
    if not isinstance(body, dict):
        raise KustomizeError(f"{where}: a patch is a list of ops or an object")
    kind = target.get("kind") or body.get("kind")
    name = target.get("name") or body.get("metadata", {}).get("name")
    for obj in _select(objects, kind, name):
        merged = strategic_merge(obj, body)
        obj.clear()
        obj.update(merged)


def _select(objects: list[Obj], kind: str | None, name: str | None) -> list[Obj]:
    found = [
        o
        for o in objects
        if (kind is None or o.get("kind") == kind)
        and (name is None or o["metadata"].get("name") == name)
    ]
    if not found:
        raise KustomizeError(f"patch target {kind}/{name} matches no object")
    return found


def _json6902(obj: Obj, ops: list[Obj], where: Path) -> None:
    for op in ops:
        parts = [
            p.replace("~1", "/").replace("~0", "~") for p in op["path"][1:].split("/")
        ]
        parent: Any = obj
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        kind = op["op"]
        if kind == "remove":
            if isinstance(parent, list):
                del parent[int(last)]
            elif last in parent:
                del parent[last]
            else:
                raise KustomizeError(f"{where}: remove {op['path']}: no such field")
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                elif kind == "add":
                    parent.insert(int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                parent[last] = op["value"]
        else:
            raise KustomizeError(f"{where}: JSON patch op {kind!r} not supported")


def strategic_merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = strategic_merge(out.get(key), value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(x, dict) and "name" in x for x in base + patch)
    ):
        out_list = copy.deepcopy(base)
        for item in patch:
            for i, existing in enumerate(out_list):
                if existing["name"] == item["name"]:
                    out_list[i] = strategic_merge(existing, item)
                    break
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def _check_unique(objects: list[Obj], where: Path) -> None:
    seen: set[tuple[str, str, str]] = set()
    for o in objects:
        key = (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
        if key in seen:
            raise KustomizeError(f"{where}: {key[0]} {key[2]} is defined twice")
        seen.add(key)
