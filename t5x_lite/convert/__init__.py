"""Hugging Face <-> t5x_lite checkpoints for T5 (v1.0, v1.1, mT5, UL2) and BERT."""

from __future__ import annotations

from pathlib import Path

from t5x_lite.convert import hf_io
from t5x_lite.convert.t5 import ConversionError, t5_config_from_hf, t5_config_to_hf, t5_params_from_hf, t5_params_to_hf

T5_TYPES = ("t5", "mt5", "umt5")


def import_hf(directory: str | Path):
    """(model wrapper, params in the model's layout) from a local HF directory."""
    from t5x_lite.models import model as model_lib

    directory = Path(directory)
    hf_config = hf_io.read_config(directory)
    model_type = hf_config.get("model_type")
    if model_type not in ("t5", "mt5", "bert"):  # before the weights, which may be many GB or absent
        raise ConversionError(
            f"{directory / 'config.json'}: model_type={model_type!r} is not supported (supported: t5, mt5, bert)"
        )
    state = hf_io.read_state_dict(directory)
    source = str(directory)
    if model_type == "bert":
        from t5x_lite.convert.bert import bert_params_from_hf

        cfg, params = bert_params_from_hf(state, hf_config, source=source)
        # The heads present in the checkpoint decide the wrapper (and so what exports back).
        if "classifier" in params:
            return model_lib.EncoderOnlyClassificationModel(config=cfg), params
        if "mlm_dense" in params:
            return model_lib.EncoderOnlyMLMModel(config=cfg), params
        return model_lib.EncoderOnlyModel(config=cfg, pooler="pooler" in params["bert"]), params
    cfg = t5_config_from_hf(hf_config, source=str(directory / "config.json"))
    params = t5_params_from_hf(state, cfg, source)
    return model_lib.EncoderDecoderModel(config=cfg), params


def check_export_directory(directory: str | Path) -> Path:
    """``directory`` if an export may write there: new or empty of models, and no t5x_lite checkpoint or run
    (a training MODEL_DIR, one of its steps or a convert output), which HF files would clutter or shadow."""
    from t5x_lite.training import checkpoints

    hf_io.check_new_directory(directory)
    path = Path(directory).absolute()
    if checkpoints.is_run_step(path):
        raise ConversionError(f"{path}: is a step of a training run; give a new or empty directory")
    checkpoints.check_new_params_directory(path)
    return Path(directory)


def export_hf(model, params, directory: str | Path) -> Path:
    """Write config.json + model.safetensors that ``transformers`` loads with ``from_pretrained``.

    ``directory`` must be new or hold no model, checkpoint or run yet (``check_export_directory``).
    """
    check_export_directory(directory)
    params = model.to_loop_layout(params)
    if model.kind == "encoder_decoder":
        hf_config, state = t5_config_to_hf(model.config), t5_params_to_hf(params, model.config)
    elif model.kind in ("encoder_only", "encoder_only_mlm", "encoder_only_classification"):
        from t5x_lite.convert.bert import bert_config_to_hf, bert_params_to_hf

        architecture = {"encoder_only": "BertModel", "encoder_only_mlm": "BertForMaskedLM",
                        "encoder_only_classification": "BertForSequenceClassification"}[model.kind]
        hf_config, state = bert_config_to_hf(model.config, [architecture]), bert_params_to_hf(params, model.config)
    else:
        raise ConversionError(f"{model.kind} models have no Hugging Face counterpart to export to")
    hf_io.write_directory(directory, hf_config, state)
    return Path(directory)


__all__ = ["ConversionError", "check_export_directory", "export_hf", "import_hf", "t5_config_from_hf",
           "t5_config_to_hf", "t5_params_from_hf", "t5_params_to_hf"]
