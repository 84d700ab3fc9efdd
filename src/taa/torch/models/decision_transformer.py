"""The Decision Transformer: offline reinforcement learning as sequence modelling.

Chen et al. 2021, "Decision Transformer: Reinforcement Learning via Sequence Modeling", §3:

- a trajectory is the sequence (R_1, s_1, a_1, R_2, s_2, a_2, ...), where R_t is the
  return-to-go (the sum of the rewards from step t to the end), s_t the state, a_t the action;
- each modality has its own linear embedding, and "an embedding for each timestep is
  learned and added to each token" (three tokens share a time step's embedding), followed
  by a LayerNorm;
- a causal GPT (the pre-norm layers of :mod:`taa.torch.blocks`) reads the 3K tokens of the
  last K steps; the action a_t is predicted from the state token s_t (it has seen R_t and
  s_t, not a_t). transformers' model also predicts the next state and return from the
  action token; they are returned, as theirs are, and unused in training here.

At evaluation the target return is given for R_1 and decreased by each reward received:
asking for a lower return gives a lower-return behaviour (§5, "Does Decision Transformer
perform behavior cloning on a subset of the data?").

Discrete actions (CartPole) go in one-hot and come out as logits; continuous ones
(Pendulum, MuJoCo) come out through tanh. The class matches transformers'
``DecisionTransformerModel`` weight for weight (:mod:`taa.convert.hf_decision_transformer`),
including one detail of theirs: their GPT-2 is called with every position id 0, so its
first position embedding is added to every token; here that vector is ``position``.

Notation: ``b`` batch, ``t`` time steps (K), ``d`` d_model.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from taa.config import DecisionTransformerConfig
from taa.torch.attention import key_padding_to_attention_mask
from taa.torch.blocks import Encoder, norm_from_config
from taa.torch.dropout import Dropout
from taa.torch.models.gpt import normal_init_
from taa.torch.models.transformer import Transformer


class DecisionTransformer(nn.Module):
    """``model(states, actions, returns_to_go, timesteps, attention_mask=None)`` -> (state
    predictions (b, t, state_dim), action predictions (b, t, act_dim), return predictions
    (b, t, 1)), in transformers' order.

    ``states`` (b, t, state_dim) floats; ``actions`` (b, t, act_dim) floats (one-hot when
    discrete); ``returns_to_go`` (b, t, 1); ``timesteps`` (b, t) integers; ``attention_mask``
    (b, t), 1 at real steps and 0 at padding (the left of a short history).
    """

    def __init__(self, config: DecisionTransformerConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.embed_timestep = nn.Embedding(config.max_ep_len, d)
        self.embed_return = nn.Linear(1, d)
        self.embed_state = nn.Linear(config.state_dim, d)
        self.embed_action = nn.Linear(config.act_dim, d)
        self.embed_norm = norm_from_config(config)
        self.position = nn.Parameter(torch.zeros(d))  # transformers' wpe[0], added to every token
        self.embedding_dropout = Dropout(config.dropout)
        self.blocks = Encoder(config, config.n_layers, final_norm=True)
        self.predict_state = nn.Linear(d, config.state_dim)
        self.predict_action = nn.Linear(d, config.act_dim)
        self.predict_return = nn.Linear(d, 1)
        normal_init_(self, config.init_std)

    def forward(self, states: Tensor, actions: Tensor, returns_to_go: Tensor, timesteps: Tensor,
                attention_mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
        b, t = states.shape[:2]
        if timesteps.numel() and int(timesteps.max()) >= self.config.max_ep_len:
            raise ValueError(f"time step {int(timesteps.max())} is past max_ep_len={self.config.max_ep_len}")
        time = self.embed_timestep(timesteps)  # (b, t, d): one per step, shared by its three tokens
        tokens = torch.stack([
            self.embed_return(returns_to_go) + time,
            self.embed_state(states) + time,
            self.embed_action(actions) + time,
        ], dim=2).reshape(b, 3 * t, -1)  # (b, 3t, d): R_1, s_1, a_1, R_2, ...
        x = self.embedding_dropout(self.embed_norm(tokens) + self.position)
        mask = None
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            padding = attention_mask.bool().repeat_interleave(3, dim=1)  # (b, 3t): a step's three tokens
            mask = key_padding_to_attention_mask(padding)  # (b, 1, 1, 3t)
        hidden = self.blocks(x, mask, causal=True).reshape(b, t, 3, -1)  # (b, t, 3, d)
        action = self.predict_action(hidden[:, :, 1])  # from s_t's token
        if self.config.action_tanh:
            action = torch.tanh(action)
        return self.predict_state(hidden[:, :, 2]), action, self.predict_return(hidden[:, :, 2])

    num_parameters = Transformer.num_parameters
    parameter_breakdown = Transformer.parameter_breakdown
