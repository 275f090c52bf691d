import torch

from esmdiv.forward.packing import batches_by_tokens, cut_batches, encode, pack, pad, unpack


def test_encode_is_fair_esm_batch_converter(random_8m):
    alphabet = random_8m.alphabet
    _, _, expected = alphabet.get_batch_converter()([("a", "MKTXBUZO")])
    assert torch.equal(encode("MKTXBUZO", alphabet), expected[0])


def test_pack_unpack_and_positions_restart():
    seqs = [torch.arange(3), torch.arange(10, 15), torch.arange(20, 21)]
    packed = pack(seqs)
    assert packed.cu_seqlens.tolist() == [0, 3, 8, 9] and packed.cu_seqlens.dtype == torch.int32
    assert packed.max_seqlen == 5
    assert packed.position_ids.tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 0]
    assert packed.seq_index.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 2]
    assert [t.tolist() for t in unpack(packed.input_ids, packed.cu_seqlens)] == [s.tolist() for s in seqs]
    assert pad(seqs, 1).shape == (3, 5)


def test_batches_respect_the_padded_budget_and_cover_everything():
    lengths = [5, 100, 7, 50, 50, 3, 300]
    batches = batches_by_tokens(lengths, 200)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        cost = len(batch) * max(lengths[i] for i in batch)
        assert cost <= 200 or len(batch) == 1
    assert batches[0] == [6]  # longest first, alone over budget


def test_batches_are_cut_greedily_up_to_exactly_the_budget():
    # The cost is len(batch) * its longest: two 10-token sequences fit a budget of 20, a third does not.
    assert cut_batches(range(5), [10] * 5, 20) == [[0, 1], [2, 3], [4]]
    assert batches_by_tokens([10, 10], 20) == [[0, 1]]  # at the budget is within it
    assert batches_by_tokens([10, 10], 19) == [[0], [1]]
    # longest first; a new batch's cost starts from its own longest, not the last batch's
    assert batches_by_tokens([4, 9, 5, 3], 18) == [[1, 2], [0, 3]]


def test_a_packed_batch_moves_every_tensor_and_keeps_its_shape():
    packed = pack([torch.arange(3), torch.arange(4)])
    assert packed.lengths == [3, 4]
    moved = packed.to("meta")
    tensors = (moved.input_ids, moved.cu_seqlens, moved.position_ids, moved.seq_index)
    assert all(t.device.type == "meta" for t in tensors)
    assert [t.dtype for t in tensors] == [torch.int64, torch.int32, torch.int64, torch.int64]
    assert [t.shape[0] for t in tensors] == [7, 3, 7, 7] and moved.max_seqlen == 4


def test_to_padded_scatters_each_sequence_into_its_own_row():
    from esmdiv.forward.packing import to_padded

    packed = pack([torch.arange(3), torch.arange(1)])
    flat = torch.arange(4.0)[:, None] + 1  # (T, 1): 1, 2, 3 | 4
    out = to_padded(flat, packed)
    assert out.shape == (2, 3, 1)
    assert out[..., 0].tolist() == [[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]]
