"""semscale.subsets: LDAM-exact long-tailed subsets, per-class counts, nested balanced subsets, held-out splits."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from semscale import subsets

CIFAR10_LT_100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


# ---------------------------------------------------------------- LDAM reference (inline copy)


def ldam_reference(targets, cls_num, imb_factor, seed, imb_type="exp"):
    """IMBALANCECIFAR10.get_img_num_per_cls + gen_imbalanced_data of LDAM-DRW, returning indices."""
    np.random.seed(seed)
    img_max = len(targets) / cls_num
    img_num_per_cls = []
    if imb_type == "exp":
        for cls_idx in range(cls_num):
            num = img_max * (imb_factor ** (cls_idx / (cls_num - 1.0)))
            img_num_per_cls.append(int(num))
    else:
        for cls_idx in range(cls_num // 2):
            img_num_per_cls.append(int(img_max))
        for cls_idx in range(cls_num // 2):
            img_num_per_cls.append(int(img_max * imb_factor))
    targets_np = np.array(targets, dtype=np.int64)
    classes = np.unique(targets_np)
    selected = []
    for the_class, the_img_num in zip(classes, img_num_per_cls):
        idx = np.where(targets_np == the_class)[0]
        np.random.shuffle(idx)
        selected.append(idx[:the_img_num])
    return img_num_per_cls, np.concatenate(selected)


def balanced_labels(num_classes, per_class, seed=0):
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))


def test_ldam_counts():
    assert subsets.long_tailed_counts(10, 100, 5000) == CIFAR10_LT_100
    assert sum(CIFAR10_LT_100) == 12406
    c100 = subsets.long_tailed_counts(100, 100, 500)
    assert (c100[0], c100[-1], len(c100)) == (500, 5, 100)
    for num_classes, n_max in ((10, 5000), (100, 500)):
        for imb in (10, 50, 100, 200):
            expected, _ = ldam_reference(np.repeat(np.arange(num_classes), n_max), num_classes, 1 / imb, 0)
            assert subsets.long_tailed_counts(num_classes, imb, n_max) == expected
    assert subsets.long_tailed_counts(10, 1, 5000) == [5000] * 10


def test_step_counts():
    assert subsets.long_tailed_counts(10, 10, 5000, "step") == [5000] * 5 + [500] * 5
    assert subsets.long_tailed_counts(5, 10, 100, "step") == [100, 100, 10, 10, 10]
    expected, _ = ldam_reference(np.repeat(np.arange(100), 500), 100, 1 / 100, 0, "step")
    assert subsets.long_tailed_counts(100, 100, 500, "step") == expected


@pytest.mark.parametrize(
    "num_classes,per_class,imb,seed,profile",
    [(10, 500, 100, 0, "exp"), (10, 300, 10, 3, "exp"), (100, 50, 50, 0, "exp"), (20, 40, 200, 7, "exp"), (10, 200, 10, 1, "step")],
)
def test_long_tailed_matches_ldam_loop(num_classes, per_class, imb, seed, profile):
    labels = balanced_labels(num_classes, per_class, seed=seed + 11)
    counts, reference = ldam_reference(labels.tolist(), num_classes, 1 / imb, seed, profile)
    sub = subsets.long_tailed_indices(labels, imb, profile=profile, seed=seed, allow_empty=True)  # LDAM's, empty classes too
    np.testing.assert_array_equal(sub.indices, reference)
    assert sub.indices.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(labels[sub.indices], minlength=num_classes), counts)
    # the same from a torch tensor
    assert subsets.long_tailed_indices(torch.from_numpy(labels), imb, profile=profile, seed=seed, allow_empty=True).sha256 == sub.sha256


def test_long_tailed_cifar10_shape_and_explicit_n_max():
    labels = balanced_labels(10, 5000)
    sub = subsets.long_tailed_indices(labels, 100)
    assert np.bincount(labels[sub.indices]).tolist() == CIFAR10_LT_100
    sub = subsets.long_tailed_indices(labels, 100, n_max=1000)
    assert np.bincount(labels[sub.indices]).tolist() == subsets.long_tailed_counts(10, 100, 1000)
    with pytest.raises(ValueError, match="has 5000 samples"):
        subsets.long_tailed_indices(labels, 100, n_max=6000)


def test_global_rng_restored():
    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    subsets.long_tailed_indices(balanced_labels(10, 50), 10, seed=5)
    subsets.per_class_indices(balanced_labels(10, 50), [5] * 10, seed=5)
    np.testing.assert_array_equal(np.random.rand(3), expected)


def test_per_class_indices():
    mnist_like = np.random.default_rng(0).permutation(np.repeat(np.arange(10), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]))
    for counts in (subsets.MNIST_LT_1, subsets.MNIST_LT_2):
        sub = subsets.per_class_indices(mnist_like, counts, seed=0)
        assert np.bincount(mnist_like[sub.indices]).tolist() == list(counts)
        assert len(set(sub.indices.tolist())) == len(sub.indices)
        # same scheme as LDAM's loop: seed, then per class shuffle and keep a prefix
        np.random.seed(0)
        ref = []
        for c, n in enumerate(counts):
            idx = np.where(mnist_like == c)[0]
            np.random.shuffle(idx)
            ref.append(idx[:n])
        np.testing.assert_array_equal(sub.indices, np.concatenate(ref))
    with pytest.raises(ValueError, match="class 5 has 5421 samples, 6000 asked"):
        subsets.per_class_indices(mnist_like, [10] * 5 + [6000] + [10] * 4)
    with pytest.raises(ValueError, match="9 counts given for 10 classes"):
        subsets.per_class_indices(mnist_like, [10] * 9)


def test_parameter_validation():
    labels = balanced_labels(10, 20)
    with pytest.raises(ValueError, match=">= 1"):
        subsets.long_tailed_indices(labels, 0.5)
    with pytest.raises(ValueError, match="valid: exp, step"):
        subsets.long_tailed_indices(labels, 10, profile="linear")
    with pytest.raises(ValueError, match="num_classes"):
        subsets.long_tailed_counts(1, 10, 100)
    with pytest.raises(ValueError, match="n_max"):
        subsets.long_tailed_counts(10, 10, 0)
    with pytest.raises(ValueError, match=r"1\.\.20"):
        subsets.nested_balanced_indices(labels, [10, 21])


def test_nested_balanced_indices():
    labels = balanced_labels(10, 100, seed=2)
    labels = np.concatenate([labels, np.full(7, 3)])  # an unequal class does not matter
    sizes = [50, 10, 20, 100]
    nested = subsets.nested_balanced_indices(labels, sizes, seed=1)
    assert list(nested) == [10, 20, 50, 100]
    previous = set()
    for m, sub in nested.items():
        assert np.bincount(labels[sub.indices], minlength=10).tolist() == [m] * 10
        assert len(set(sub.indices.tolist())) == 10 * m
        assert previous <= set(sub.indices.tolist())
        previous = set(sub.indices.tolist())
    again = subsets.nested_balanced_indices(labels, [20], seed=1)
    assert again[20].sha256 == nested[20].sha256
    assert subsets.nested_balanced_indices(labels, [20], seed=2)[20].sha256 != nested[20].sha256


def test_sha256_stability_and_sensitivity():
    sub = subsets.make_subset([0, 1, 2, 3, 4])
    assert sub.sha256 == hashlib.sha256(np.arange(5, dtype="<i8").tobytes()).hexdigest()
    assert sub.sha256 == "281b02b10f5f4997e5bf8c93343e6f2aa8bc81ffad6d6813c593181ebceda12a"
    assert subsets.indices_sha256(np.arange(5)) == sub.sha256
    assert subsets.make_subset(np.arange(5, dtype=np.int32)).sha256 == sub.sha256  # dtype-independent
    assert subsets.make_subset([0, 1, 2, 4, 3]).sha256 != sub.sha256  # order matters
    assert subsets.make_subset([0, 1, 2, 3, 5]).sha256 != sub.sha256
    # pinned digests: a change in the selection scheme shows up here
    labels = np.repeat(np.arange(10), 50)
    assert subsets.long_tailed_indices(labels, 10, seed=0).sha256 == PINNED_LT
    assert subsets.nested_balanced_indices(labels, [5], seed=0)[5].sha256 == PINNED_NESTED
    assert subsets.long_tailed_indices(labels, 10, seed=1).sha256 != PINNED_LT


PINNED_LT = "87673439d0c7c322da4fd57e02beb9c72bf0077ca2705a7aee710dffda27e876"
PINNED_NESTED = "ccdd8cbae7c8972139f0a83912bfc95e47739a287e4dcbeb2146786668f6a4d5"


def test_default_n_max_is_ldams_on_balanced_data_and_fits_every_class_otherwise():
    balanced = np.arange(5000) % 10
    assert subsets.default_n_max(balanced, 100) == 500.0  # LDAM's len / C
    mnist_counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    mnist_like = np.repeat(np.arange(10), mnist_counts)
    assert subsets.default_n_max(mnist_like, 100) == 5923.0  # len / C = 6000 would ask class 0 for more than it has
    assert subsets.default_n_max(mnist_like, 10, "step") == 5842.0  # the smallest head class (0..4)
    subset = subsets.long_tailed_indices(mnist_like, 100)
    assert np.bincount(mnist_like[subset.indices]).tolist() == subsets.long_tailed_counts(10, 100, 5923.0)


def test_heldout_split_is_balanced_and_outside_the_subset_where_it_can_be():
    labels = np.repeat(np.arange(3), [10, 40, 40])
    subset = np.concatenate([np.arange(10), np.arange(10, 20), np.arange(50, 55)])  # class 0 fully used
    index, from_subset = subsets.heldout_indices(labels, subset, per_class=8, seed=0)
    assert np.bincount(labels[index], minlength=3).tolist() == [8, 8, 8]
    assert from_subset == [8, 0, 0]
    assert not set(index[labels[index] > 0]) & set(subset)
    again, _ = subsets.heldout_indices(labels, subset, per_class=8, seed=0)
    np.testing.assert_array_equal(index, again)


def test_an_imbalance_that_empties_a_class_is_an_error_naming_the_largest_the_data_allow():
    labels = balanced_labels(10, 20)
    assert subsets.largest_imbalance(labels) == 20
    assert np.bincount(labels[subsets.long_tailed_indices(labels, 20).indices]).min() == 1
    for factor in (21, 1000):
        with pytest.raises(ValueError, match=r"leaves class\(es\) \[.*9\] without an image.*largest imbalance these data allow is 20"):
            subsets.long_tailed_indices(labels, factor)
    with pytest.raises(ValueError, match="largest imbalance these data allow is 20"):
        subsets.long_tailed_indices(labels, 30, profile="step")
    assert subsets.largest_imbalance(labels, n_max=7) == 7
