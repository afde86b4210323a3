"""The optimizer bertforge builds: fused AdamW on the CPU, with the reference loop's update."""

import copy

import torch

from bertforge.config import BertConfig
from bertforge.model import BertForPreTraining
from bertforge.train.config import TrainConfig
from bertforge.train.optim import build_optimizer, parameter_groups


def test_cpu_adamw_is_fused_and_updates_as_the_reference_loop():
    torch.manual_seed(0)
    config = BertConfig.from_preset("tiny", vocab_size=300, max_position_embeddings=32,
                                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # both see one gradient
    model = BertForPreTraining(config)
    reference = copy.deepcopy(model)
    train = TrainConfig(learning_rate=1e-3, weight_decay=0.01)
    optimizer = build_optimizer(model, train, torch.device("cpu"))
    assert optimizer.defaults["fused"] is True
    loop = torch.optim.AdamW(parameter_groups(reference, train.weight_decay), lr=train.learning_rate,
                             betas=(train.beta1, train.beta2), eps=train.epsilon, foreach=False)
    for step in range(4):
        ids = torch.randint(5, 300, (2, 16), generator=torch.Generator().manual_seed(step))
        for net, opt in ((model, optimizer), (reference, loop)):
            opt.zero_grad()
            net(input_ids=ids, labels=ids).loss.backward()
            opt.step()
    for (name, ours), theirs in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)
