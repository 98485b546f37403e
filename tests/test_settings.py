"""Settings: typed defaults, bad values fall back, persistence, FOLIO_HOME isolation."""

from app import paths
from app.settings import OPTIONS, Settings


def test_defaults_and_persistence(folio_home):
    s = Settings()
    assert s.kv_mode == "auto" and s.temperature == OPTIONS["temperature"].default
    s.set("temperature", 0.2)
    s.set("kv_mode", "int4")
    again = Settings()
    assert again.temperature == 0.2 and again.kv_mode == "int4"
    assert paths.settings_file().is_relative_to(folio_home)


def test_bad_values_fall_back_to_defaults(folio_home):
    paths.settings_file().write_text('{"temperature": "hot", "kv_mode": "int3", "max_tokens": -5, "unknown": 1}')
    s = Settings()
    assert s.temperature == OPTIONS["temperature"].default
    assert s.kv_mode == "auto"
    assert s.max_tokens == OPTIONS["max_tokens"].default


def test_corrupt_file_is_not_fatal(folio_home):
    paths.settings_file().write_text("{{{")
    assert Settings().kv_mode == "auto"
