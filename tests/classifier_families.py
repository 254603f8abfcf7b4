"""Tiny randomly initialised Food-101 classifiers of every family foodcal supports, saved with
`save_pretrained` next to their own image processor's config, exactly as a real checkpoint is."""

from __future__ import annotations

import zipfile
from pathlib import Path
from types import SimpleNamespace

import torch
import transformers as tf

from model_store.reference import food101_labels, lookup
from model_store.worker import food101_handler

SQUARE = {"height": 32, "width": 32}
LARGER = {"height": 36, "width": 36}


def _families() -> dict[str, tuple]:
    # (model class, config, image processor): the processors are the ones each family ships with
    # (crop_pct, shortest_edge + crop, height/width, BGR channel order), at tiny sizes.
    vit_like = dict(
        patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    return {
        "vit": (
            tf.ViTForImageClassification,
            tf.ViTConfig(image_size=32, **vit_like),
            tf.ViTImageProcessorPil(size=SQUARE),
        ),
        "deit": (
            tf.DeiTForImageClassification,
            tf.DeiTConfig(image_size=32, **vit_like),
            tf.DeiTImageProcessorPil(size=LARGER, crop_size=SQUARE),
        ),
        "beit": (
            tf.BeitForImageClassification,
            tf.BeitConfig(image_size=32, use_mean_pooling=True, **vit_like),
            tf.BeitImageProcessorPil(size=LARGER, crop_size=SQUARE, do_center_crop=True),
        ),
        "swin": (
            tf.SwinForImageClassification,
            tf.SwinConfig(
                image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4
            ),
            tf.ViTImageProcessorPil(
                size=SQUARE, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]
            ),
        ),
        "convnext": (
            tf.ConvNextForImageClassification,
            tf.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
            tf.ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=0.875),
        ),
        "resnet": (
            tf.ResNetForImageClassification,
            tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]),
            tf.ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=0.875, resample=3),
        ),
        "regnet": (
            tf.RegNetForImageClassification,
            tf.RegNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=8),
            tf.ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=0.875),
        ),
        "efficientnet": (
            tf.EfficientNetForImageClassification,
            tf.EfficientNetConfig(
                image_size=32, width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128
            ),
            tf.EfficientNetImageProcessorPil(size=SQUARE),
        ),
        "mobilenet_v1": (
            tf.MobileNetV1ForImageClassification,
            tf.MobileNetV1Config(image_size=32, depth_multiplier=0.25),
            tf.MobileNetV1ImageProcessorPil(size={"shortest_edge": 36}, crop_size=SQUARE),
        ),
        "mobilenet_v2": (
            tf.MobileNetV2ForImageClassification,
            tf.MobileNetV2Config(image_size=32, depth_multiplier=0.25),
            tf.MobileNetV2ImageProcessorPil(size={"shortest_edge": 36}, crop_size=SQUARE),
        ),
        "mobilevit": (
            tf.MobileViTForImageClassification,
            tf.MobileViTConfig(
                image_size=32,
                hidden_sizes=[16, 16, 16],
                neck_hidden_sizes=[8, 8, 8, 8, 8, 8, 16],
                num_attention_heads=2,
            ),
            tf.MobileViTImageProcessorPil(size={"shortest_edge": 36}, crop_size=SQUARE),  # BGR, like Apple's
        ),
    }


FAMILIES = tuple(_families())


def food101_spellings(order_seed: int = 0) -> list[str]:
    """The 101 labels in a shuffled order, half of them spelled 'Apple pie' rather than 'apple_pie'."""
    labels = food101_labels()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(order_seed)).tolist()
    return [labels[i].replace("_", " ").capitalize() if n % 2 else labels[i] for n, i in enumerate(order)]


def write_checkpoint(family: str, out_dir: Path, labels: list[str] | None = None) -> Path:
    labels = labels if labels is not None else food101_spellings()
    model_class, config, processor = _families()[family]
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    torch.manual_seed(0)
    model_class(config).save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return Path(out_dir)


def reference_serving(label: str) -> tuple[float, float, float, float]:
    return lookup(label).nutrients


def load_food101_handler(mar: Path, target: Path):
    """The food101 handler initialised on a built .mar's files, unpacked the way TorchServe does
    (tests/test_handlers.py proves the archive's own code runs the same)."""
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(target)
    handler = food101_handler.Food101Handler()
    handler.initialize(SimpleNamespace(system_properties={"model_dir": str(target)}, manifest={}))
    return handler
