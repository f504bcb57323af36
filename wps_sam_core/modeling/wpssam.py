"""WPSSAM: the learned prompter on top of a frozen SAM.

Training side: `forward(embeddings)` gives class logits and student tokens; `teacher_*` give the
tokens SAM's own prompt encoder makes from ground-truth boxes or points. Inference side:
`decode` runs SAM's mask decoder on predicted tokens of *many images at once* (one call).
"""
from __future__ import annotations

import torch
from segment_anything.modeling import Sam
from torch import Tensor, nn

from .prompter import Prompter, PrompterConfig, PrompterOutput
from .sam import freeze


class WPSSAM(nn.Module):
    def __init__(self, sam: Sam, prompter: Prompter) -> None:
        super().__init__()
        self.sam = freeze(sam)
        self.prompter = prompter

    @classmethod
    def create(cls, sam: Sam, prompter_cfg: PrompterConfig) -> "WPSSAM":
        embedding_size = sam.prompt_encoder.image_embedding_size[0]
        return cls(sam, Prompter(prompter_cfg, embedding_size))

    def train(self, mode: bool = True) -> "WPSSAM":
        super().train(mode)
        self.sam.eval()  # frozen SAM never switches to training behaviour
        return self

    @property
    def image_size(self) -> int:
        return self.sam.image_encoder.img_size

    # ---- training side -------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Normalised, padded B x 3 x S x S images -> B x C x s x s SAM embeddings."""
        return self.sam.image_encoder(images)

    def forward(self, embeddings: Tensor) -> PrompterOutput:
        return self.with_tokens(self.prompter(embeddings))

    def with_tokens(self, out: PrompterOutput) -> PrompterOutput:
        """Box/point heads: SAM's prompt encoder turns the predicted coordinates into the 2 tokens
        (differentiable in the coordinates; SAM's weights stay frozen). Token heads pass through."""
        if out.coords is None:
            return out
        b, q, k = out.coords.shape
        pixels = out.coords.reshape(b * q, k) * self.image_size  # SAM's input frame
        if k == 4:
            tokens = self.sam.prompt_encoder._embed_boxes(pixels)
        else:  # a positive click + SAM's padding point, exactly as the prompt encoder builds a lone point
            labels = torch.ones(b * q, 1, dtype=torch.int, device=pixels.device)
            tokens = self.sam.prompt_encoder._embed_points(pixels[:, None, :], labels, pad=True)
        return out._replace(tokens=tokens.view(b, q, *tokens.shape[1:]))

    @torch.no_grad()
    def teacher_box_tokens(self, boxes: Tensor) -> Tensor:
        """N x 4 boxes (xyxy, resized-input frame) -> N x 2 x C sparse tokens, as SAM makes them."""
        sparse, _ = self.sam.prompt_encoder(points=None, boxes=boxes.reshape(-1, 4), masks=None)
        return sparse

    @torch.no_grad()
    def teacher_point_tokens(self, points: Tensor, labels: Tensor | None = None) -> Tensor:
        """N x 2 positive points (resized-input frame) -> N x 2 x C tokens (point + SAM's pad token)."""
        points = points.reshape(-1, 1, 2)
        if labels is None:
            labels = torch.ones(points.shape[0], 1, dtype=torch.int, device=points.device)
        sparse, _ = self.sam.prompt_encoder(points=(points, labels.reshape(-1, 1)), boxes=None, masks=None)
        return sparse

    # ---- inference side ------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, embeddings: Tensor, image_index: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Decode M prompts over B images in ONE mask-decoder pass.

        embeddings: B x C x s x s; image_index: M (which image each prompt belongs to);
        tokens: M x T x C sparse prompt tokens. Returns (M x 1 x 4s x 4s low-res logits, M IoU
        predictions) for SAM's single-mask output (the one `multimask_output=False` selects).

        This is `MaskDecoder.predict_masks` with the per-prompt image embedding *gathered* by
        `image_index` instead of `repeat_interleave`d from one image — that is what lets prompts of
        several images share a batch. Only the single-mask hypernetwork is evaluated.
        """
        dec, pe = self.sam.mask_decoder, self.sam.prompt_encoder
        m = tokens.shape[0]
        output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        all_tokens = torch.cat((output_tokens.unsqueeze(0).expand(m, -1, -1).to(tokens.dtype), tokens), dim=1)
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        src = embeddings.index_select(0, image_index) + dense
        pos_src = pe.get_dense_pe().expand(m, -1, -1, -1)
        b, c, h, w = src.shape
        hs, src = dec.transformer(src, pos_src, all_tokens)
        iou_token_out, mask_token_out = hs[:, 0, :], hs[:, 1, :]
        upscaled = dec.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper_in = dec.output_hypernetworks_mlps[0](mask_token_out).unsqueeze(1)
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, 1, h, w)
        iou_pred = dec.iou_prediction_head(iou_token_out)[:, 0]
        return masks, iou_pred
