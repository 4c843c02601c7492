"""bench.profile: HLO instructions -> categories, trace events -> per-category time."""
from maskvid.bench import profile

HLO = '''
ENTRY %main {
  %fusion.1 = f32[8,8]{1,0} fusion(%p0), kind=kLoop, calls=%f1, metadata={op_name="jit(train_step)/jvp(VideoTransformer)/block_0/attn/vmap(BTNH,BSNH->BNTS)/dot_general"}
  %fusion.2 = f32[8,8]{1,0} fusion(%p0), kind=kLoop, calls=%f2, metadata={op_name="jit(train_step)/transpose(jvp(VideoTransformer))/block_0/mlp/fc1/dot_general"}
  %custom-call.3 = bf16[8]{0} custom-call(%p0), custom_call_target="__cudnn$fmhaSoftmax", metadata={op_name="jit(train_step)/jvp(VideoTransformer)/block_0/attn/dot_product_attention"}
  %fusion.4 = f32[8]{0} fusion(%p0), kind=kLoop, calls=%f4, metadata={op_name="jit(train_step)/transpose(jvp(VideoTransformer))/block_0/norm1/mul"}
  %fusion.5 = f32[8]{0} fusion(%p0), kind=kLoop, calls=%f5, metadata={op_name="jit(train_step)/jvp(VideoTransformer)/block_0/attn/qkv/dot_general"}
  %fusion.6 = f32[8]{0} fusion(%p0), kind=kLoop, calls=%f6, metadata={op_name="jit(train_step)/mul"}
  %all-reduce.7 = f32[8]{0} all-reduce(%p0), replica_groups={}
  ROOT %fusion.8 = f32[8]{0} fusion(%p0), kind=kLoop, calls=%f8, metadata={op_name="jit(train_step)/jit(sample_patch_masks)/add"}
}
'''


def test_instructions_are_categorised_by_their_op_name():
  ins = profile.hlo_instructions(HLO)
  assert ins['custom-call.3'][2] == '__cudnn$fmhaSoftmax' and ins['all-reduce.7'][0] == 'all-reduce'
  got = {n: profile.categorize(*v) for n, v in ins.items()}
  assert got['fusion.1'] == ('attention core', 'fwd')
  assert got['fusion.2'] == ('matmul', 'bwd')
  assert got['custom-call.3'] == ('attention core', 'fwd')
  assert got['fusion.4'] == ('norm / modulation / elementwise', 'bwd')
  assert got['fusion.5'] == ('matmul', 'fwd')          # q/k/v projection: a matmul, not attention
  assert got['fusion.6'] == ('optimizer + EMA', '')
  assert got['all-reduce.7'][0] == 'collectives'
  assert got['fusion.8'] == ('noise / masks / loss', '')


def test_breakdown_sums_per_category_and_finds_the_host_gap():
  ins = profile.hlo_instructions(HLO)
  events = [
      {'ph': 'X', 'ts': 0, 'dur': 300, 'name': 'x', 'args': {'hlo_module': 'jit_train_step',
                                                            'hlo_op': 'fusion.2'}},
      {'ph': 'X', 'ts': 100, 'dur': 100, 'name': 'fusion.1',
       'args': {'hlo_module': 'jit_train_step.3', 'hlo_op': 'fusion.1'}},   # overlaps the first
      {'ph': 'X', 'ts': 500, 'dur': 100, 'name': 'end: fusion.1',
       'args': {'hlo_module': 'jit_train_step'}},                          # not an op
      {'ph': 'X', 'ts': 700, 'dur': 200, 'name': 'y', 'args': {'hlo_module': 'jit_other',
                                                              'hlo_op': 'fusion.2'}},
      {'ph': 'X', 'ts': 800, 'dur': 100, 'name': 'z', 'args': {'hlo_module': 'jit_train_step',
                                                              'hlo_op': 'unknown.9'}},
  ]
  ops = profile.op_events(events)
  assert [o[0] for o in ops] == ['fusion.2', 'fusion.1', 'unknown.9']
  b = profile.breakdown(ops, ins, step_wall_us=2000, steps=2)
  rows = {r['category']: r for r in b['rows']}
  assert rows['matmul']['ms'] == 0.15 and rows['matmul']['bwd_ms'] == 0.15
  assert rows['attention core']['ms'] == 0.05 and rows['other']['ms'] == 0.05
  assert abs(sum(r['share'] for r in b['rows']) - 1.0) < 1e-9
  assert b['busy_ms'] == 0.2 and b['host_gap_ms'] == 0.8 and b['unmatched_events'] == 1
  assert 'host gap' in profile.format_table(b)
