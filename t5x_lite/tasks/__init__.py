"""Registered tasks. Importing this package registers providers; tasks are built on first lookup."""

from __future__ import annotations

from typing import Optional

from t5x_lite.data.tasks import DataError, MixtureRegistry, TaskRegistry
from t5x_lite.tasks import bundled, tfds_tasks

TaskRegistry.add_provider(bundled.register)
TaskRegistry.add_provider(tfds_tasks.register_default)
MixtureRegistry.add_provider(TaskRegistry.load)  # the task providers register the mixtures (GLUE's, SuperGLUE's)


def with_vocabulary(task: str, vocabulary, data_dir: Optional[str] = None) -> str:
    """``task``'s name, once the classification tasks (bundled sentiment, GLUE, SuperGLUE) are registered with
    ``vocabulary``: how a gin file names a task together with the tokenizer its model reads
    (``TASK = @tasks.with_vocabulary()``; a converted BERT's ``@tasks.WordPieceVocabulary()``). A SentencePiece
    vocabulary re-registers the TFDS text-to-text tasks too (``tfds_tasks.register``). Either also re-registers
    the bundled corpus's masked LM, ``bundled_corpus_bert_mlm`` (with WordPiece, to pretrain a converted BERT
    further as Hugging Face's run_mlm.py would)."""
    tfds_tasks.register(vocabulary, data_dir)
    bundled.register_classification(vocabulary)
    bundled.register_mlm(vocabulary)
    if TaskRegistry.get(task).vocabulary is not vocabulary:  # a name it does not cover: say so, not train on
        covered = [name for name in TaskRegistry.names() if TaskRegistry.get(name).vocabulary is vocabulary]
        raise DataError(f"tasks.with_vocabulary: task {task!r} is not one it registers with {vocabulary!r}; it "
                        f"registers {', '.join(covered)}")
    return task


__all__ = ["MixtureRegistry", "TaskRegistry", "bundled", "tfds_tasks", "with_vocabulary"]
