"""The predictive expert (paper section 3.3): an action Diffusion Transformer for precise interaction.

It denoises an action chunk (12 steps x 7 numbers per arm) with DiT blocks: self-attention over the chunk's
steps, cross-attention to the condition tokens, and adaLN-zero modulation by the diffusion timestep plus the
proprioceptive state (with `obs_steps` 2 also its change since the previous control step, diffusion policy's
two observation steps). With `gripper_head` the gripper command has a classification head of its own: learned
chunk queries through a few DiT blocks that read the same condition tokens and state (no noisy chunk, no
timestep), trained with binary cross-entropy on the demonstrated command; its probability replaces the denoised
gripper number (a binary command regressed through a denoiser comes out between the modes, or as a one-step
spike, and the station thresholds it late or not at all). The condition tokens are the world model's hidden
tokens of the current prediction, the SigLIP patch tokens of every camera's current image and the T5 tokens of
the instruction, each projected to the expert's width and tagged with a learned modality (and camera)
embedding. Trained to predict the noise (diffusers `DDPMScheduler`), sampled with `DDIMScheduler` in
`inference_steps` steps. SigLIP and T5 are frozen (instruction embeddings are cached).

    expert = PredictiveExpert(PredictiveExpertConfig(), action_dim=7, state_dim=7, wm_width=64, num_cameras=3)
    cond = expert.condition(images, wm_tokens, instructions)     # images (B, cams, 3, H, W)
    loss = expert.loss(cond, state, actions, action_is_pad)       # state (B, 7); with obs_steps 2 (tiny) (B, 14):
    actions = expert.sample(cond, state)                          # the state and its change -> (B, 12, 7)
    p_closed = expert.gripper_probability(cond, state)            # gripper_head: (B, 12, arms) in [0, 1]
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from harmowam_core.action_space import PER_ARM
from harmowam_core.models import encoders
from harmowam_core.models.presets import PredictiveExpertConfig

FREQ_DIM = 256
MAX_TEXT_TOKENS = 32


def over_real_steps(err: torch.Tensor, action_is_pad: torch.Tensor | None) -> torch.Tensor:
    """The mean of a per-step error (B, chunk) over the chunk's real (not padded) steps."""
    keep = torch.ones_like(err) if action_is_pad is None else (~action_is_pad.to(err.device)).float()
    return (err * keep).sum() / keep.sum().clamp(min=1.0)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class DiTBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.cross = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm3 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.ada[1].weight)  # adaLN-zero: every block starts as the identity
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)
        h = modulate(self.norm1(x), shift1, scale1)
        x = x + gate1.unsqueeze(1) * self.attn(h, h, h, need_weights=False)[0]
        h = self.norm2(x)
        x = x + self.cross(h, cond, cond, need_weights=False)[0]
        h = modulate(self.norm3(x), shift2, scale2)
        return x + gate2.unsqueeze(1) * self.mlp(h)


class PredictiveExpert(encoders.WithFrozenParts):
    def __init__(
        self,
        config: PredictiveExpertConfig,
        action_dim: int,
        state_dim: int,
        wm_width: int,
        num_cameras: int,
        chunk: int = 12,
    ):
        super().__init__()
        self.config, self.action_dim, self.chunk, self.num_cameras = config, action_dim, chunk, num_cameras
        text_encoder, self.tokenizer = encoders.text_encoder(config.text_encoder)
        self._frozen = {"text": text_encoder}  # outside the module tree (WithFrozenParts)
        self.image_net: encoders.ConvEncoder | None = None
        if config.image_backbone == "conv":  # trained with the experts (tiny)
            image_encoder = self.image_net = encoders.ConvEncoder(config.image_size)
        else:  # frozen SigLIP (the paper)
            image_encoder = self._frozen["image"] = encoders.image_encoder(config.image_encoder, config.image_size)
        self.keypoint_embed: nn.Module | None = None
        self._text_cache: dict[str, torch.Tensor] = {}
        w = config.hidden_size
        self.wm_proj = nn.Linear(wm_width, w)
        self.image_proj = nn.Linear(encoders.width(image_encoder), w)
        self.text_proj = nn.Linear(encoders.width(text_encoder), w)
        self.modality = nn.Parameter(torch.zeros(3, w))  # world model, image, text
        self.camera = nn.Parameter(torch.zeros(num_cameras, w))
        self.time_proj = Timesteps(FREQ_DIM, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(FREQ_DIM, w)
        self.state_embed = nn.Sequential(nn.Linear(state_dim * config.obs_steps, w), nn.SiLU(), nn.Linear(w, w))
        if self.image_net is not None and config.keypoints:  # (cams * width * 2) coordinates -> the adaLN condition
            self.keypoint_embed = nn.Sequential(nn.Linear(num_cameras * self.image_net.width * 2, w), nn.SiLU(),
                                                nn.Linear(w, w))  # fmt: skip
        self.action_in = nn.Linear(action_dim, w)
        self.position = nn.Parameter(torch.randn(chunk, w) * 0.02)
        self.blocks = nn.ModuleList(DiTBlock(w, config.num_attention_heads) for _ in range(config.num_layers))
        self.norm_out = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(w, 2 * w))
        self.action_out = nn.Linear(w, action_dim)
        for layer in (self.ada_out[1], self.action_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.gripper_blocks: nn.ModuleList | None = None
        if config.gripper_head:
            if action_dim % PER_ARM:
                raise ValueError(f"gripper_head needs {PER_ARM} numbers per arm, the gripper last (not {action_dim})")
            self.gripper_queries = nn.Parameter(torch.randn(chunk, w) * 0.02)
            heads, layers = config.num_attention_heads, config.gripper_layers
            self.gripper_blocks = nn.ModuleList(DiTBlock(w, heads) for _ in range(layers))
            self.gripper_norm = nn.LayerNorm(w, eps=1e-6)
            self.gripper_out = nn.Linear(w, action_dim // PER_ARM)
        self.scheduler = DDPMScheduler(
            num_train_timesteps=config.train_timesteps,
            beta_schedule="squaredcos_cap_v2",
            prediction_type="epsilon",
            clip_sample=False,
        )

    # ------------------------------------------------------------------------------------------- frozen
    @property
    def device(self) -> torch.device:
        return self.action_in.weight.device

    @property
    def image_width(self) -> int:
        """The width of the image tokens (the gate reads them too)."""
        return encoders.width(self.image_net if self.image_net is not None else self._frozen["image"])

    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, cams, 3, H, W) current images (uint8, or float in [0, 1]) -> (B, cams, N, width) patch tokens: of
        the trained convolutional encoder (with grad), or of the frozen SigLIP (no grad)."""
        return self.image_features(images)[0]

    def image_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`image_tokens` and, when `keypoint_embed` reads them, every camera's spatial-softmax keypoints
        flattened to (B, cams * width * 2) (else None)."""
        b, cams = images.shape[:2]
        pixels = encoders.pixels(images, self.config.image_size, encoders.SIGLIP_MEAN, encoders.SIGLIP_STD)
        keypoints = None
        if self.image_net is not None:
            tokens, points = self.image_net.tokens_and_keypoints(pixels.to(self.device))
            if self.keypoint_embed is not None:
                keypoints = points.reshape(b, -1)
        else:
            with torch.no_grad():
                tokens = self._frozen["image"](pixel_values=pixels.to(self.device)).last_hidden_state
        return tokens.reshape(b, cams, *tokens.shape[1:]), keypoints

    def text_tokens(self, instructions: list[str]) -> torch.Tensor:
        return encoders.embed_text(
            self._frozen["text"], self.tokenizer, self._text_cache, instructions, MAX_TEXT_TOKENS, self.device
        )

    # ------------------------------------------------------------------------------------------- model
    def condition(
        self,
        images: torch.Tensor | None,
        wm_tokens: torch.Tensor | None,
        instructions: list[str],
        image_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Condition tokens (B, L, width) from the current images (or their SigLIP tokens, if computed already),
        the world model's hidden tokens (B, n, wm_width; None for the latent ablation) and the instruction."""
        if image_tokens is None:
            image_tokens = self.image_tokens(images)
        img = self.image_proj(image_tokens.float()) + self.modality[1] + self.camera.unsqueeze(1)
        parts = [img.flatten(1, 2), self.text_proj(self.text_tokens(instructions).float()) + self.modality[2]]
        if wm_tokens is not None:
            parts.insert(0, self.wm_proj(wm_tokens.float().to(self.device)) + self.modality[0])
        return torch.cat(parts, dim=1)

    def forward(
        self,
        noisy: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        state: torch.Tensor,
        keypoints: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The predicted noise of a noisy chunk (B, chunk, A) at diffusion steps t (B,) (with `prediction`
        "sample": the predicted clean chunk). `state` (B, state_dim * obs_steps): the standardised state, with
        `obs_steps` 2 followed by its scaled change since the previous control step. `keypoints`
        (B, cams * width * 2), from `image_features`, join the adaLN condition when the expert has a
        `keypoint_embed`."""
        c = self.time_embed(self.time_proj(t).to(noisy.dtype)) + self._observation(state, keypoints)
        x = self.action_in(noisy) + self.position
        for block in self.blocks:
            x = block(x, cond, c)
        shift, scale = self.ada_out(c).chunk(2, dim=-1)
        return self.action_out(modulate(self.norm_out(x), shift, scale))

    def _observation(self, state: torch.Tensor, keypoints: torch.Tensor | None) -> torch.Tensor:
        """The observation's part of the adaLN condition (B, width): the state's embedding plus, with a
        `keypoint_embed`, the keypoints'."""
        c = self.state_embed(state.float())
        if self.keypoint_embed is not None:
            if keypoints is None:
                raise ValueError("this predictive expert reads the cameras' keypoints: pass image_features' 2nd output")
            c = c + self.keypoint_embed(keypoints.float())
        return c

    @property
    def gripper_index(self) -> list[int]:
        """The gripper command's place in an action, one per arm (the last of each arm's 7 numbers)."""
        return [arm * PER_ARM + PER_ARM - 1 for arm in range(self.action_dim // PER_ARM)]

    def gripper_logits(
        self, cond: torch.Tensor, state: torch.Tensor, keypoints: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The gripper head's logits of a closed gripper (B, chunk, arms), per chunk step and arm. Raises
        `ValueError` when the expert has no gripper head."""
        if self.gripper_blocks is None:
            raise ValueError("this predictive expert has no gripper head (PredictiveExpertConfig.gripper_head)")
        c = self._observation(state.to(self.device), keypoints)
        x = self.gripper_queries.expand(cond.shape[0], -1, -1)
        for block in self.gripper_blocks:
            x = block(x, cond, c)
        return self.gripper_out(self.gripper_norm(x))

    def gripper_loss(
        self,
        cond: torch.Tensor,
        state: torch.Tensor,
        closed: torch.Tensor,
        action_is_pad: torch.Tensor | None = None,
        keypoints: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Binary cross-entropy of the gripper head against `closed` (B, chunk, arms; 1 where the demonstrated
        command closes the gripper), over the chunk's real (not padded) steps."""
        logits = self.gripper_logits(cond, state, keypoints)
        err = nn.functional.binary_cross_entropy_with_logits(logits, closed.float().to(logits.device), reduction="none")
        return over_real_steps(err.mean(-1), action_is_pad)

    @torch.no_grad()
    def gripper_probability(
        self, cond: torch.Tensor, state: torch.Tensor, keypoints: torch.Tensor | None = None
    ) -> torch.Tensor:
        """p(closed) per chunk step and arm, (B, chunk, arms) in [0, 1]: the gripper command to execute."""
        return torch.sigmoid(self.gripper_logits(cond, state, keypoints))

    def loss(
        self,
        cond: torch.Tensor,
        state: torch.Tensor,
        actions: torch.Tensor,
        action_is_pad: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        keypoints: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The denoising loss over the chunk's real (not padded) steps: |eps - eps_hat|^2, or with `prediction`
        "sample" |x0 - x0_hat|^2."""
        actions = actions.float().to(self.device)
        b = actions.shape[0]
        noise = torch.randn(actions.shape, generator=generator, device=actions.device)
        t = torch.randint(0, self.config.train_timesteps, (b,), generator=generator, device=actions.device)
        noisy = self.scheduler.add_noise(actions, noise, t)
        target = actions if self.config.prediction == "sample" else noise
        err = ((self(noisy, t, cond, state.to(self.device), keypoints) - target) ** 2).mean(-1)
        return over_real_steps(err, action_is_pad)

    @torch.no_grad()
    def sample(
        self,
        cond: torch.Tensor,
        state: torch.Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
        keypoints: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """An action chunk (B, chunk, A) by DDIM in `steps` (default `inference_steps`) steps. `bounds` (low,
        high), per action number: each step's estimate of the clean chunk is clamped into them, and the noise
        re-derived from the clamped estimate. Near the last training step the noise schedule keeps almost no
        signal (alpha_bar 2.5e-4 at t = 99), so dividing out the predicted noise multiplies its error by ~60:
        unclamped, 50 or 100 steps, which start there, drift far outside any demonstrated action."""
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(self.config.inference_steps if steps is None else steps, device=self.device)
        alpha_bar = scheduler.alphas_cumprod.to(self.device)
        b = cond.shape[0]
        x = torch.randn((b, self.chunk, self.action_dim), generator=generator, device=self.device)
        for t in scheduler.timesteps:
            out = self(x, t.expand(b), cond, state.to(self.device), keypoints)
            a = alpha_bar[t]
            if self.config.prediction == "sample" or bounds is not None:
                clean = out if self.config.prediction == "sample" else (x - (1 - a).sqrt() * out) / a.sqrt()
                if bounds is not None:
                    clean = clean.clamp(bounds[0], bounds[1])
                out = (x - a.sqrt() * clean) / (1 - a).sqrt()  # the noise that estimate implies
            x = scheduler.step(out, t, x).prev_sample
        return x
