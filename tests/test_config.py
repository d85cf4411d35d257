from pathlib import Path

import pytest

from cfmodel.config import Config, apply_overrides, load_config
from cfmodel.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_without_file():
    cfg = load_config(None)
    assert isinstance(cfg, Config)
    assert cfg.prepare.valid_fraction == 0.2
    assert cfg.prepare.valid_cold_start == "train"


@pytest.mark.parametrize("name", ["local.yaml", "cluster.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(str(ROOT / "conf" / name))
    assert cfg.prepare.seed == 42


@pytest.mark.parametrize("name", ["local.yaml", "cluster.yaml", "demo.yaml"])
def test_shipped_configs_hold_only_what_differs_from_the_defaults(name):
    """An environment's file states only its differences, so every line in it is a choice a reader can see.
    Broken version caught: a file repeating a default (as conf/local.yaml once repeated 105 of 109)."""
    import yaml

    defaults = Config()

    def same(section, data, where):
        for key, value in data.items():
            default = getattr(section, key)
            if isinstance(value, dict) and hasattr(default, "__dataclass_fields__"):
                yield from same(default, value, f"{where}.{key}")
            elif value == default:
                yield f"{where}.{key}"

    data = yaml.safe_load((ROOT / "conf" / name).read_text())
    assert [k for s, v in data.items() for k in same(getattr(defaults, s), v, s)] == []


def test_the_code_and_the_shipped_local_config_train_the_same_objective():
    assert load_config(None).train.objective == load_config(str(ROOT / "conf" / "local.yaml")).train.objective


def test_a_renamed_key_is_read_under_its_old_name_with_a_warning_naming_the_new(tmp_path, caplog):
    f = tmp_path / "c.yaml"
    f.write_text("prepare:\n  cold_start: drop\nevaluate:\n  als_rank: 7\n")
    with caplog.at_level("WARNING", logger="cfmodel.config.load"):
        cfg = load_config(str(f), ["score.min_item_ratings=3"])
    assert (cfg.prepare.valid_cold_start, cfg.evaluate.als_n_factors, cfg.score.min_candidate_ratings) == ("drop", 7, 3)
    assert "'prepare.cold_start' is now 'prepare.valid_cold_start'" in caplog.text
    assert "'score.min_item_ratings' is now 'score.min_candidate_ratings'" in caplog.text
    with pytest.raises(ConfigError, match="'prepare.cold_start' and 'prepare.valid_cold_start' are the same key"):
        load_config(str(f), ["prepare.valid_cold_start=keep"])


def test_cluster_config_keeps_urls():
    cfg = load_config(str(ROOT / "conf" / "cluster.yaml"))
    assert cfg.prepare.input.startswith("s3a://")
    assert cfg.prepare.output.startswith("hdfs://")


def test_unknown_nested_key_is_named(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("prepare:\n  valid_fracton: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'prepare\.valid_fracton'") as err:
        load_config(str(f))
    assert str(f) in str(err.value)


def test_unknown_section_is_named(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("prepar:\n  seed: 1\n")
    with pytest.raises(ConfigError, match="unknown config key 'prepar'"):
        load_config(str(f))


def test_wrong_type_names_field(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("prepare:\n  seed: abc\n")
    with pytest.raises(ConfigError, match="prepare.seed"):
        load_config(str(f))


def test_int_accepted_for_float_but_bool_is_not(tmp_path):
    assert load_config(None, ["prepare.rating_max=5"]).prepare.rating_max == 5.0
    with pytest.raises(ConfigError):
        load_config(None, ["prepare.rating_max=true"])


def test_overrides_parse_yaml_scalars():
    cfg = load_config(str(ROOT / "conf" / "local.yaml"),
                      ["prepare.valid_fraction=0.1", "prepare.timestamp_col=null", "spark.master=local[1]"])
    assert cfg.prepare.valid_fraction == 0.1
    assert cfg.prepare.timestamp_col is None
    assert cfg.spark.master == "local[1]"


@pytest.mark.parametrize("bad", ["prepare.seed", "seed=1", "prepare..seed=1"])
def test_malformed_override(bad):
    with pytest.raises(ConfigError):
        apply_overrides({}, [bad])


def test_unknown_override_key_is_named():
    with pytest.raises(ConfigError, match="prepare.nope"):
        load_config(None, ["prepare.nope=1"])


@pytest.mark.parametrize("override, message", [
    ("prepare.valid_fraction=1.5", "valid_fraction"),
    ("prepare.valid_cold_start=maybe", "valid_cold_start"),
    ("prepare.input_format=xlsx", "input_format"),
    ("prepare.rating_min=6;prepare.rating_max=5", "rating_min"),
    ("prepare.item_col=userId", "column names must differ"),
    ("train.wd_epoch_steps=0", "wd_epoch_steps must be >= 1 or null"),
])
def test_value_checks(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, override.split(";"))


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))
    f = tmp_path / "bad.yaml"
    f.write_text("prepare: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(f))


def test_spark_conf_override_keeps_dotted_key_and_text():
    cfg = load_config(str(ROOT / "conf" / "local.yaml"),
                      ["spark.conf.spark.sql.shuffle.partitions=4", "spark.conf.spark.ui.enabled=false"])
    assert cfg.spark.conf["spark.sql.shuffle.partitions"] == "4"
    assert cfg.spark.conf["spark.ui.enabled"] == "false"
    assert cfg.spark.conf["spark.driver.memory"] == "2g"  # the file's other entries stay


def test_exponent_notation_is_a_number_and_text_is_still_refused():
    # YAML 1.1 reads 1e-3 as text; a float key takes it as the number people mean.
    cfg = load_config(None, ["train.lr=1e-3", "evaluate.max_valid_rmse=9e-1", "train.y_range=[1e-1, 5]"])
    assert cfg.train.lr == 0.001 and cfg.evaluate.max_valid_rmse == 0.9 and cfg.train.y_range == [0.1, 5.0]
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(None, ["train.lr=fast"])


@pytest.mark.parametrize("objective, wd, epochs, samples", [("rating", 1.5, 8, 512), ("hybrid", 1.5, 8, 1024),
                                                             ("bpr", 0.5, 24, 512), ("softmax", 0.6, 32, 512)])
def test_null_wd_epochs_and_samples_are_the_objectives(objective, wd, epochs, samples):
    for conf in (None, str(ROOT / "conf" / "local.yaml"), str(ROOT / "conf" / "cluster.yaml")):
        train = load_config(conf, [f"train.objective={objective}"]).train
        assert (train.weight_decay, train.run_epochs, train.total_epochs(), train.samples) == (
            wd, epochs, epochs, samples)
    train = load_config(None, [f"train.objective={objective}", "train.wd=0.2", "train.epochs=3",
                               "train.softmax_samples=0"]).train
    assert (train.weight_decay, train.run_epochs, train.total_epochs(), train.samples) == (0.2, 3, 3, 0)
    assert load_config(None, [f"train.objective={objective}", "train.schedule=sgdr"]).train.total_epochs() == 7
    with pytest.raises(ConfigError, match="epochs"):
        load_config(None, ["train.epochs=0"])


def test_progress_bars_only_on_a_terminal_unless_forced(monkeypatch):
    """A scheduler's log (stderr not a terminal) gets no tqdm bar by default. Broken version caught: bars on
    by default (Airflow's log filled with carriage returns)."""
    import io
    import sys

    from cfmodel.config import TrainConfig

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert TrainConfig().show_progress is False and TrainConfig(progress=True).show_progress is True
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert TrainConfig().show_progress is True and TrainConfig(progress=False).show_progress is False
