"""Shared fixtures: a tiny seeded world, its renderer and context builder, a tiny dataset."""

import random

import pytest

from longblocks.build import build
from longblocks.config import BuildConfig
from longblocks.render.context import ContextBuilder
from longblocks.render.documents import Renderer
from longblocks.render.sizing import load_counter
from longblocks.world.graph import WorldGraph, WorldSize, build_world
from tests.golden_files import match_golden


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/ files")


@pytest.fixture(scope="session")
def golden(request):
    """golden(path, value, **json_dump_options): `value` must equal tests/golden/<file>."""
    update = request.config.getoption("--update-golden")
    return lambda path, value, **dump: match_golden(path, value, update, **dump)


@pytest.fixture(scope="session")
def world():
    return build_world("test-world", seed=7, language="en", size=WorldSize(people=120))


@pytest.fixture(scope="session")
def graph(world):
    return WorldGraph(world)


@pytest.fixture(scope="session")
def counter():
    return load_counter(None)


@pytest.fixture
def renderer(graph):
    return Renderer(graph)


@pytest.fixture
def builder(renderer, counter):
    return ContextBuilder(renderer, counter)


@pytest.fixture
def rng():
    return random.Random(1234)


@pytest.fixture(scope="session")
def tiny_config():
    return BuildConfig(lengths=[1024, 2048], num_examples=12, examples_per_world=3, seed=3)


@pytest.fixture(scope="session")
def tiny_rows(tiny_config):
    """rows by split and worlds of a 12-example dataset (4 worlds)."""
    return build(tiny_config)
