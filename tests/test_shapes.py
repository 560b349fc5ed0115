"""output_shape, conv_transpose_output_shape and receptive_field (fastconv/shapes.py)."""
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import conv_matrix, conv_transpose_output_shape, output_shape, receptive_field


def test_output_shape_examples():
    assert output_shape((280, 320), (1, 2)) == (280, 319)
    assert output_shape((8, 64, 56, 56), (3, 3), stride=2, padding=1) == (8, 64, 28, 28)
    assert output_shape((10,), 3, padding="same", stride=3) == (4,)
    assert output_shape((10,), 3, padding="full") == (12,)
    assert output_shape((5,), 2, stride=2, ceil_mode=True) == (3,)
    assert conv_transpose_output_shape((8, 64, 28, 28), (4, 4), stride=2, padding=1) == (8, 64, 56, 56)
    with pytest.raises(ValueError, match="output_shape: kernel_size"):
        output_shape((2, 2), (3, 3))


@settings(deadline=None, max_examples=40)
@given(st.integers(1, 3), st.data())
def test_output_shape_is_conv_shape(rank, data):
    in_sp = tuple(data.draw(st.lists(st.integers(3, 7), min_size=rank, max_size=rank)))
    k = tuple(data.draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank)))
    s = data.draw(st.integers(1, 3))
    p = data.draw(st.sampled_from([0, 1, "same", "valid", "full"]))
    x = np.zeros((2,) + in_sp)
    w = np.zeros((3, 2) + k)
    assert output_shape(x.shape, k, stride=s, padding=p) == (2,) + fastconv.conv(x, w, stride=s,
                                                                                   padding=p).shape[1:]
    y = np.zeros((3,) + output_shape(in_sp, k, stride=s, padding=0))
    assert conv_transpose_output_shape(y.shape, k, stride=s) == (3,) + \
        fastconv.conv_transpose(y, np.zeros((3, 2) + k), stride=s).shape[1:]


def test_receptive_field_lecture_cases():
    three = receptive_field([{"kernel_size": 3}] * 3)
    assert [f.receptive_field for f in three] == [3, 5, 7]
    assert [f.jump for f in three] == [1, 1, 1]
    assert [f.start for f in three] == [0, 0, 0]
    assert three[-1].center == 3 and three[-1].output_size is None
    dil = receptive_field([{"kernel_size": 3, "dilation": d} for d in (1, 2, 4)])
    assert [f.receptive_field for f in dil] == [3, 7, 15]
    dil2 = receptive_field([{"kernel_size": (3, 3), "dilation": (d, d)} for d in (1, 2, 4)])
    assert dil2[-1].receptive_field == (15, 15)


def test_receptive_field_strides_padding_and_sizes():
    # conv3 p1 -> pool2 s2 -> conv3 p1 -> pool2 s2 (a VGG-style block pair)
    layers = [{"kernel_size": 3, "padding": 1}, {"kernel_size": 2, "stride": 2},
              {"kernel_size": 3, "padding": 1}, {"kernel_size": 2, "stride": None}]
    res = receptive_field(layers, input_size=32)
    assert [f.receptive_field for f in res] == [3, 4, 8, 10]
    assert [f.jump for f in res] == [1, 2, 2, 4]
    assert [f.start for f in res] == [-1, -1, -3, -3]
    assert [f.center for f in res] == [0, 0.5, 0.5, 1.5]
    assert [f.output_size for f in res] == [32, 16, 16, 8]
    # per-dim tuples, pairs and attribute objects
    layer = types.SimpleNamespace(kernel_size=(3, 1), stride=(2, 1), padding=((1, 0), (0, 0)),
                                  dilation=1)
    res = receptive_field([layer, {"kernel_size": (3, 3)}], input_size=(9, 9))
    assert res[-1].receptive_field == (7, 3) and res[-1].jump == (2, 1)
    assert res[-1].start == (-1, 0) and res[-1].output_size == (2, 7)
    obj = types.SimpleNamespace(kernel_size=5)          # missing attributes take the defaults
    assert receptive_field([obj])[0] == (5, 1, 0, 2, None)


def test_receptive_field_same_padding_and_errors():
    res = receptive_field([{"kernel_size": 3, "padding": "same"}] * 2)
    assert res[-1].start == -2 and res[-1].receptive_field == 5
    with pytest.raises(ValueError, match="receptive_field: layers\\[0\\] has padding='same' with stride"):
        receptive_field([{"kernel_size": 3, "stride": 2, "padding": "same"}])
    res = receptive_field([{"kernel_size": 3, "stride": 2, "padding": "same"}], input_size=10)
    assert res[0].output_size == 5 and res[0].start == 0      # total padding 1, all after
    with pytest.raises(ValueError, match="receptive_field: layers\\[1\\]: window"):
        receptive_field([{"kernel_size": 3}, {"kernel_size": 5}], input_size=6)
    with pytest.raises(ValueError, match="has no kernel_size"):
        receptive_field([{"stride": 2}])
    with pytest.raises(ValueError, match="unknown key"):
        receptive_field([{"kernel_size": 3, "strides": 2}])
    with pytest.raises(TypeError, match="receptive_field: layers"):
        receptive_field(3)


@settings(deadline=None, max_examples=40)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2), st.integers(1, 3)),
                min_size=1, max_size=4))
def test_receptive_field_matches_the_composed_matrix(spec):
    """The support of a row of the product of the layers' matrices is [start + u*jump, ... + rf - 1]."""
    n = 200
    layers = [{"kernel_size": k, "stride": s, "padding": p, "dilation": d} for k, s, p, d in spec]
    size = n
    M = None
    for k, s, p, d in spec:
        if size + 2 * p < d * (k - 1) + 1:
            return                                 # the stack does not fit this input
        L = conv_matrix((1, size), np.ones((1, 1, k)), stride=s, padding=p, dilation=d)
        M = L if M is None else L @ M
        size = L.shape[0]
    res = receptive_field(layers, input_size=n)[-1]
    assert res.output_size == size
    for u in range(size):
        lo, hi = res.start + u * res.jump, res.start + u * res.jump + res.receptive_field - 1
        cols = M[[u]].tocoo().coords[1]
        if lo >= 0 and hi < n:                     # a window entirely inside the input
            assert cols.min() == lo and cols.max() == hi
        elif cols.size:                            # clipped by the padding
            assert lo <= cols.min() and cols.max() <= hi


def test_receptive_field_honours_ceil_mode():
    """A pooling layer with ceil_mode (a dict key or a layer attribute) rounds its output size up,
    as torch's pooling does; the field itself does not change."""
    plain = receptive_field([{"kernel_size": 2, "stride": None}], input_size=7)[0]
    ceil = receptive_field([{"kernel_size": 2, "stride": None, "ceil_mode": True}], input_size=7)[0]
    assert (plain.output_size, ceil.output_size) == (3, 4)
    assert plain[:4] == ceil[:4]

    class MaxPool:          # the attributes torch's nn.MaxPool2d has
        kernel_size, stride, padding, dilation, ceil_mode = 3, 2, 1, 1, True
    assert receptive_field([MaxPool()], input_size=(8, 8))[0].output_size == (5, 5)
    assert output_shape((8, 8), 3, 2, 1, ceil_mode=True) == (5, 5)
    with pytest.raises(TypeError, match="ceil_mode"):
        receptive_field([{"kernel_size": 2, "ceil_mode": "yes"}])
    with pytest.raises(TypeError, match="ceil_mode"):
        output_shape((8, 8), 3, 2, 1, ceil_mode="no")
    one = receptive_field([{"kernel_size": 2, "stride": None, "ceil_mode": 1}], input_size=7)[0]
    assert one.output_size == 4


def test_receptive_field_of_a_torch_pooling_module():
    torch = pytest.importorskip("torch")
    pool = torch.nn.MaxPool2d(2, ceil_mode=True)
    got = receptive_field([pool], input_size=(7, 7))[0].output_size
    assert got == tuple(pool(torch.zeros(1, 1, 7, 7)).shape[2:]) == (4, 4)
