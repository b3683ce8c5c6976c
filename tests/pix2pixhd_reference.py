"""An independent re-statement of the official pix2pixHD modules and training step, for parity tests.

Written from the facts of NVIDIA/pix2pixHD ``models/networks.py`` and ``models/pix2pixHD_model.py`` (module
order and index structure, so that state-dict keys are the official ones; plain ``nn.InstanceNorm2d``; the
official order of operations in a step: three discriminator passes, the generator loss back-propagated into
everything, G's step, then D's loss and step). It shares no code with ``ugatit_cli.families.pix2pixhd``.
"""

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def norm_factory(kind):
    if kind == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False)
    return functools.partial(nn.BatchNorm2d, affine=True)


class RefResBlock(nn.Module):
    def __init__(self, dim, norm):
        super().__init__()
        seq = []
        for k in range(2):
            seq += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, padding=0), norm(dim)]
            if k == 0:
                seq.append(nn.ReLU(True))
        self.conv_block = nn.Sequential(*seq)

    def forward(self, x):
        return x + self.conv_block(x)


def global_sequence(input_nc, output_nc, ngf, n_down, n_blocks, norm):
    seq = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0), norm(ngf), nn.ReLU(True)]
    for i in range(n_down):
        mult = 2**i
        seq += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1), norm(ngf * mult * 2),
                nn.ReLU(True)]
    for _ in range(n_blocks):
        seq.append(RefResBlock(ngf * 2**n_down, norm))
    for i in range(n_down):
        mult = 2 ** (n_down - i)
        seq += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, kernel_size=3, stride=2, padding=1,
                                   output_padding=1), norm(ngf * mult // 2), nn.ReLU(True)]
    seq += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
    return seq


class RefGlobal(nn.Module):
    def __init__(self, input_nc, output_nc, ngf, n_down, n_blocks, norm="instance"):
        super().__init__()
        self.model = nn.Sequential(*global_sequence(input_nc, output_nc, ngf, n_down, n_blocks,
                                                    norm_factory(norm)))

    def forward(self, x):
        return self.model(x)


class RefLocal(nn.Module):
    def __init__(self, input_nc, output_nc, ngf, n_down, n_blocks, n_local, n_blocks_local, norm="instance"):
        super().__init__()
        nl = norm_factory(norm)
        self.n_local = n_local
        seq = global_sequence(input_nc, output_nc, ngf * 2**n_local, n_down, n_blocks, nl)
        self.model = nn.Sequential(*seq[:len(seq) - 3])
        for n in range(1, n_local + 1):
            c = ngf * 2 ** (n_local - n)
            down = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, c, kernel_size=7, padding=0), nl(c), nn.ReLU(True),
                    nn.Conv2d(c, c * 2, kernel_size=3, stride=2, padding=1), nl(c * 2), nn.ReLU(True)]
            up = [RefResBlock(c * 2, nl) for _ in range(n_blocks_local)]
            up += [nn.ConvTranspose2d(c * 2, c, kernel_size=3, stride=2, padding=1, output_padding=1), nl(c),
                   nn.ReLU(True)]
            if n == n_local:
                up += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
            setattr(self, f"model{n}_1", nn.Sequential(*down))
            setattr(self, f"model{n}_2", nn.Sequential(*up))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=[1, 1], count_include_pad=False)

    def forward(self, x):
        levels = [x]
        for _ in range(self.n_local):
            levels.append(self.downsample(levels[-1]))
        prev = self.model(levels[-1])
        for n in range(1, self.n_local + 1):
            prev = getattr(self, f"model{n}_2")(getattr(self, f"model{n}_1")(levels[self.n_local - n]) + prev)
        return prev


class RefEncoder(nn.Module):
    def __init__(self, input_nc, output_nc, ngf, n_down, norm="instance"):
        super().__init__()
        nl = norm_factory(norm)
        self.output_nc = output_nc
        seq = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0), nl(ngf), nn.ReLU(True)]
        for i in range(n_down):
            mult = 2**i
            seq += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1), nl(ngf * mult * 2),
                    nn.ReLU(True)]
        for i in range(n_down):
            mult = 2 ** (n_down - i)
            seq += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, kernel_size=3, stride=2, padding=1,
                                       output_padding=1), nl(ngf * mult // 2), nn.ReLU(True)]
        seq += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*seq)

    def forward(self, image, inst):
        out = self.model(image)
        mean = out.clone()
        for value in np.unique(inst.cpu().numpy().astype(int)):  # the official triple loop
            for b in range(image.size(0)):
                idx = (inst[b:b + 1] == int(value)).nonzero()
                for j in range(self.output_nc):
                    sel = out[idx[:, 0] + b, idx[:, 1] + j, idx[:, 2], idx[:, 3]]
                    mean[idx[:, 0] + b, idx[:, 1] + j, idx[:, 2], idx[:, 3]] = torch.mean(sel).expand_as(sel)
        return mean


class RefMultiscaleD(nn.Module):
    def __init__(self, input_nc, ndf=64, n_layers=3, norm="instance", num_D=2, interm=True):  # noqa: N803
        super().__init__()
        nl = norm_factory(norm)
        self.num_D, self.n_layers, self.interm = num_D, n_layers, interm
        padw = int(np.ceil((4 - 1.0) / 2))
        for i in range(num_D):
            seq = [[nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]]
            nf = ndf
            for _ in range(1, n_layers):
                prev, nf = nf, min(nf * 2, 512)
                seq.append([nn.Conv2d(prev, nf, kernel_size=4, stride=2, padding=padw), nl(nf),
                            nn.LeakyReLU(0.2, True)])
            prev, nf = nf, min(nf * 2, 512)
            seq.append([nn.Conv2d(prev, nf, kernel_size=4, stride=1, padding=padw), nl(nf), nn.LeakyReLU(0.2, True)])
            seq.append([nn.Conv2d(nf, 1, kernel_size=4, stride=1, padding=padw)])
            if interm:
                for j, part in enumerate(seq):
                    setattr(self, f"scale{i}_layer{j}", nn.Sequential(*part))
            else:
                setattr(self, f"layer{i}", nn.Sequential(*[m for part in seq for m in part]))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=[1, 1], count_include_pad=False)

    def forward(self, x):
        out = []
        for i in range(self.num_D):
            k = self.num_D - 1 - i
            if self.interm:
                feats = [x]
                for j in range(self.n_layers + 2):
                    feats.append(getattr(self, f"scale{k}_layer{j}")(feats[-1]))
                out.append(feats[1:])
            else:
                out.append([getattr(self, f"layer{k}")(x)])
            if i != self.num_D - 1:
                x = self.downsample(x)
        return out


class RefVgg19(nn.Module):
    """The official five slices of torchvision's VGG19 features (built with torchvision's own builder)."""

    def __init__(self, features_state):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        features = make_layers(cfgs["E"])
        result = features.load_state_dict(features_state, strict=False)  # the layers after relu5_1 are unused
        assert not result.unexpected_keys and all(int(k.split(".")[0]) >= 30 for k in result.missing_keys)
        bounds = [(0, 2), (2, 7), (7, 12), (12, 21), (21, 30)]
        self.slices = nn.ModuleList(nn.Sequential(*[features[i] for i in range(a, b)]) for a, b in bounds)
        self.requires_grad_(False)

    def forward(self, x):
        outs = []
        for s in self.slices:
            x = s(x)
            outs.append(x)
        return outs


def ref_onehot_edges(label, inst, label_nc, use_inst=True):
    size = label.size()
    onehot = torch.FloatTensor(size[0], label_nc, size[2], size[3]).zero_()
    onehot = onehot.scatter_(1, label.long(), 1.0)
    if not use_inst:
        return onehot
    t = inst
    edge = torch.ByteTensor(t.size()).zero_().bool()
    edge[:, :, :, 1:] = edge[:, :, :, 1:] | (t[:, :, :, 1:] != t[:, :, :, :-1])
    edge[:, :, :, :-1] = edge[:, :, :, :-1] | (t[:, :, :, 1:] != t[:, :, :, :-1])
    edge[:, :, 1:, :] = edge[:, :, 1:, :] | (t[:, :, 1:, :] != t[:, :, :-1, :])
    edge[:, :, :-1, :] = edge[:, :, :-1, :] | (t[:, :, 1:, :] != t[:, :, :-1, :])
    return torch.cat((onehot, edge.float()), dim=1)


def ref_gan_loss(preds, real, lsgan=True):
    loss = 0
    for p in preds:
        target = torch.full_like(p[-1], 1.0 if real else 0.0)
        loss += F.mse_loss(p[-1], target) if lsgan else F.binary_cross_entropy(torch.sigmoid(p[-1]), target)
    return loss


def official_step(net_g, net_d, opt_g, opt_d, vgg, batch, label_nc, n_layers_D=3, num_D=2, lambda_feat=10.0,  # noqa: N803
                  use_inst=True, net_e=None, feat_loss=True, lsgan=True):
    """One official iteration (train.py + Pix2PixHDModel.forward); returns the five official loss terms."""
    input_label = ref_onehot_edges(batch["label"], batch.get("inst"), label_nc, use_inst)
    real = batch["image"]
    g_in = input_label
    if net_e is not None:
        g_in = torch.cat((input_label, net_e(real, batch["inst"])), dim=1)
    fake = net_g(g_in)
    pred_fake_pool = net_d(torch.cat((input_label, fake.detach()), dim=1))
    loss_d_fake = ref_gan_loss(pred_fake_pool, False, lsgan)
    pred_real = net_d(torch.cat((input_label, real.detach()), dim=1))
    loss_d_real = ref_gan_loss(pred_real, True, lsgan)
    pred_fake = net_d(torch.cat((input_label, fake), dim=1))
    loss_g_gan = ref_gan_loss(pred_fake, True, lsgan)
    loss_g_feat = 0
    if feat_loss:
        for i in range(num_D):
            for j in range(len(pred_fake[i]) - 1):
                loss_g_feat += (1.0 / num_D) * (4.0 / (n_layers_D + 1)) * \
                    F.l1_loss(pred_fake[i][j], pred_real[i][j].detach()) * lambda_feat
    loss_g_vgg = 0
    if vgg is not None:
        xf, yf = vgg(fake), vgg(real)
        weights = [1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0]
        for w, a, b in zip(weights, xf, yf, strict=True):
            loss_g_vgg += w * F.l1_loss(a, b.detach())
        loss_g_vgg = loss_g_vgg * lambda_feat
    loss_d = (loss_d_fake + loss_d_real) * 0.5
    loss_g = loss_g_gan + loss_g_feat + loss_g_vgg
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    as_float = lambda v: float(v.detach()) if not isinstance(v, int) else 0.0  # noqa: E731
    return {"G_GAN": as_float(loss_g_gan), "G_GAN_Feat": as_float(loss_g_feat), "G_VGG": as_float(loss_g_vgg),
            "D_real": as_float(loss_d_real), "D_fake": as_float(loss_d_fake)}
