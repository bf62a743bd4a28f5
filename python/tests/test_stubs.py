"""The type stubs describe the compiled module exactly: every public class, method and
attribute on both sides, with the same parameters and the same docstrings, so IDEs show
what `help(memcache_hybrid)` shows."""

import ast
import inspect
import pathlib

import memcache_hybrid
from memcache_hybrid import _pymmc

STUB = pathlib.Path(_pymmc.__file__).with_name("_pymmc.pyi")


def stub_classes():
    tree = ast.parse(STUB.read_text())
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def public(names):
    return {n for n in names if not n.startswith("_")}


def runtime_members(cls):
    return public(vars(cls))


def stub_members(node):
    names = set()
    for item in node.body:
        if isinstance(item, ast.FunctionDef):
            names.add(item.name)
        elif isinstance(item, ast.AnnAssign):
            names.add(item.target.id)
        elif isinstance(item, ast.Assign):
            names.update(t.id for t in item.targets)
    return public(names)


def stub_constants():
    tree = ast.parse(STUB.read_text())
    return {node.target.id for node in tree.body
            if isinstance(node, ast.AnnAssign) and not node.target.id.startswith("_")}


def test_every_exported_class_and_constant_is_in_the_stub():
    assert set(memcache_hybrid.__all__) == set(stub_classes()) | stub_constants()
    for name in stub_constants():
        assert isinstance(getattr(memcache_hybrid, name), int), name


def test_the_version_is_the_distributions():
    from importlib.metadata import version

    assert memcache_hybrid.__version__ == version("memcache_hybrid")


def test_stub_members_and_docstrings_match_the_module():
    for name, node in stub_classes().items():
        cls = getattr(_pymmc, name)
        assert runtime_members(cls) == stub_members(node), name
        if not issubclass(cls, int):  # the enum's docstring differs by its base class
            assert inspect.cleandoc(cls.__doc__) == ast.get_docstring(node), name
        for item in node.body:
            if not isinstance(item, ast.FunctionDef) or item.name.startswith("_"):
                continue
            what = f"{name}.{item.name}"
            method = getattr(cls, item.name)
            assert inspect.cleandoc(method.__doc__ or "") == (ast.get_docstring(item) or ""), what
            stub_params = [a.arg for a in item.args.args]
            if not any(isinstance(d, ast.Name) and d.id == "staticmethod"
                       for d in item.decorator_list):
                assert stub_params[0] == "self", what
                stub_params = stub_params[1:]
            runtime_params = [p for p in inspect.signature(method).parameters if p != "self"]
            assert runtime_params == stub_params, what


def test_every_method_has_a_docstring():
    for name in stub_classes():
        cls = getattr(memcache_hybrid, name)
        for member in runtime_members(cls):
            value = getattr(cls, member)
            if callable(value) and not isinstance(value, cls):
                assert value.__doc__, f"{name}.{member} has no docstring"
