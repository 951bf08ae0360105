"""The training loop both recipes share: AdamW, linear warm-up, cosine decay, clipping."""

import time

import torch


def train(net, get_batch, max_steps, learning_rate, warmup):
    """`get_batch()` returns (idx, targets); targets -100 are ignored by the loss."""
    opt = torch.optim.AdamW(net.parameters(), lr=learning_rate, betas=(0.9, 0.99), weight_decay=0.01)
    net.train()
    t0 = time.time()
    for step in range(max_steps):
        cosine = torch.cos(torch.tensor(step / max_steps * 3.14159)).item()
        lr = learning_rate * min(1.0, (step + 1) / warmup) * 0.5 * (1 + cosine)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = get_batch()
        loss = net(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == max_steps - 1:
            print("step %d loss %.4f lr %.2e %.0f s" % (step, loss.item(), lr, time.time() - t0), flush=True)
