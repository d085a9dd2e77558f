"""Open-vocabulary unit descriptions (``dissect describe``): CLIP-Dissect's SoftWPMI (Oikarinen &
Weng, ICLR 2023) over a vocabulary, with an image-text model loaded from local files.

- ``_softwpmi``: the similarity (soft_wpmi), from the paper's formulas;
- ``_clip``: image-text models (hf:FOLDER CLIP/SigLIP, open_clip:ARCH:CHECKPOINT, file.py:function);
- ``_vocabulary``: the words (a file, the store's label names, common English from wordfreq);
- ``_probe``: probe images (store or folder) and units' spatial-mean activations [N, U];
- ``_run``: embeddings (cached), SoftWPMI, top words, the locked write;
- ``_output``: descriptions.csv / descriptions.json, and reading them back (the report).
"""

from ._clip import ImageText, load_image_text
from ._output import CSV_NAME, in_top, read_descriptions, write_descriptions
from ._probe import ProbeImages, activations_summary, model_summary
from ._run import PARAMS, describe_layer, describe_units, image_embeddings, text_embeddings
from ._softwpmi import soft_wpmi
from ._vocabulary import COMMON_SOURCE, choose_vocabulary, common_words, label_word, read_vocabulary, store_words

__all__ = [
    "ImageText",
    "load_image_text",
    "CSV_NAME",
    "in_top",
    "read_descriptions",
    "write_descriptions",
    "ProbeImages",
    "activations_summary",
    "model_summary",
    "PARAMS",
    "describe_layer",
    "describe_units",
    "image_embeddings",
    "text_embeddings",
    "soft_wpmi",
    "COMMON_SOURCE",
    "choose_vocabulary",
    "common_words",
    "label_word",
    "read_vocabulary",
    "store_words",
]
