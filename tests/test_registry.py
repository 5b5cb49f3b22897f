import pytest

from clip_adapter.registry import Registry, RegistryError


def test_duplicate_name_refused():
    reg = Registry("trainer")

    @reg.register()
    class A:
        pass

    class B:
        pass

    with pytest.raises(RegistryError, match="already registered"):
        reg.register(B, name="A")
    reg.register(A)  # the same class again is harmless (re-imports)
    assert reg.get("A") is A


def test_unknown_name_lists_known_and_nearest():
    reg = Registry("trainer")
    for name in ("CLIP_Adapter", "CoOp", "ZeroshotCLIP"):
        reg.register(type(name, (), {}), name=name)
    with pytest.raises(RegistryError) as e:
        reg.get("CLIP_Adaptor")
    msg = str(e.value)
    assert "did you mean 'CLIP_Adapter'" in msg
    assert "CoOp" in msg and "ZeroshotCLIP" in msg


def test_project_registries_hold_the_builtins():
    import clip_adapter.datasets  # noqa: F401
    import clip_adapter.trainers  # noqa: F401
    from clip_adapter.registry import DATASETS, TRAINERS

    assert "ZeroshotCLIP" in TRAINERS and "Smoke" in DATASETS
