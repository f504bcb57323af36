"""Our preprocessing + teacher tokens + batched decode == segment_anything.SamPredictor, numerically."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from wps_sam_core.preprocess import SamTransform, normalize_and_pad

from conftest import random_image


@pytest.mark.parametrize("shape", [(120, 200), (256, 256), (300, 90)])
def test_box_prompt_matches_sam_predictor(tiny_model, shape):
    sam = tiny_model.sam
    image = random_image(*shape, seed=shape[0])
    h, w = shape
    boxes = np.array([[w * 0.1, h * 0.2, w * 0.7, h * 0.9], [0, 0, w - 1, h - 1]])

    predictor = SamPredictor(sam)
    predictor.set_image(image)
    transform = SamTransform(tiny_model.image_size)
    resized, geometry = transform.resize_image(image)
    embedding = tiny_model.encode(normalize_and_pad(sam, [resized]))
    assert torch.equal(embedding, predictor.features)

    for box in boxes:
        masks, ious, low_res = predictor.predict(box=box, multimask_output=False)
        sparse_official, _ = sam.prompt_encoder(
            points=None, boxes=torch.as_tensor(predictor.transform.apply_boxes(box, (h, w))).float(), masks=None
        )
        tokens = tiny_model.teacher_box_tokens(
            torch.as_tensor(transform.boxes_to_input(box[None], geometry.original_size)).float()
        )
        assert torch.allclose(tokens, sparse_official, atol=1e-5)
        ours_low, ours_iou = tiny_model.decode(embedding, torch.tensor([0]), tokens)
        assert np.abs(ours_low.numpy() - low_res).max() < 1e-5
        assert np.allclose(ours_iou.numpy(), ious, atol=1e-5)
        ours_masks = sam.postprocess_masks(ours_low, geometry.input_size, geometry.original_size) > 0
        assert np.array_equal(ours_masks[0].numpy(), masks)


def test_point_prompt_matches_sam_predictor(tiny_model):
    image = random_image(150, 220, seed=3)
    point = np.array([[60.0, 70.0]])
    predictor = SamPredictor(tiny_model.sam)
    predictor.set_image(image)
    masks, _, low_res = predictor.predict(point_coords=point, point_labels=np.array([1]), multimask_output=False)
    transform = SamTransform(tiny_model.image_size)
    tokens = tiny_model.teacher_point_tokens(torch.as_tensor(transform.points_to_input(point, (150, 220))).float())
    assert tokens.shape == (1, 2, tiny_model.sam.prompt_encoder.embed_dim)
    ours_low, _ = tiny_model.decode(predictor.features, torch.tensor([0]), tokens)
    assert np.abs(ours_low.numpy() - low_res).max() < 1e-5


def test_one_decoder_call_for_several_images_equals_separate_calls(tiny_model):
    sam = tiny_model.sam
    transform = SamTransform(tiny_model.image_size)
    images = [random_image(100, 180, 1), random_image(200, 120, 2)]
    embeddings = tiny_model.encode(normalize_and_pad(sam, [transform.resize_image(i)[0] for i in images]))
    boxes = torch.tensor([[10.0, 10, 120, 90], [30, 40, 200, 230], [0, 0, 50, 60]])
    tokens = tiny_model.teacher_box_tokens(boxes)
    index = torch.tensor([0, 1, 1])
    joint, joint_iou = tiny_model.decode(embeddings, index, tokens)
    for m in range(3):
        alone, alone_iou = tiny_model.decode(embeddings[index[m]][None], torch.tensor([0]), tokens[m: m + 1])
        assert torch.allclose(joint[m], alone[0], atol=1e-5)
        assert torch.allclose(joint_iou[m], alone_iou[0], atol=1e-5)
