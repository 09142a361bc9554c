"""Tests for simulate.py: python3 -m unittest discover -s infra/scale"""

import io
import math
import unittest
from contextlib import redirect_stdout
from dataclasses import replace

import simulate as sim

P = sim.Params()
PR = sim.Prices()


class UsageTest(unittest.TestCase):
    def test_transitions_at_one_second_are_three_per_cycle_plus_the_start_end_share(self):
        u = sim.usage_per_turn_minute(P, 1)
        self.assertEqual(u.transitions, 3 * 60 + 2)

    def test_start_end_share_shrinks_with_longer_turns(self):
        two_minute_turn = replace(P, turn_seconds=120)
        self.assertEqual(sim.usage_per_turn_minute(two_minute_turn, 1).transitions, 3 * 60 + 1)

    def test_one_checker_invocation_and_one_read_per_cycle(self):
        for interval in sim.INTERVALS:
            u = sim.usage_per_turn_minute(P, interval)
            self.assertAlmostEqual(u.poll_invocations, 60 / interval)
            self.assertAlmostEqual(u.rru, 60 / interval)

    def test_writes_do_not_depend_on_the_interval(self):
        # 7 events x 2 items x 2 WRU, plus the start (2 items x 2) and the counters (2 x 2).
        for interval in sim.INTERVALS:
            self.assertAlmostEqual(sim.usage_per_turn_minute(P, interval).wru, 28 + 4 + 4)

    def test_checker_gb_seconds(self):
        u = sim.usage_per_turn_minute(replace(P, api_invokes_per_turn=0), 1)
        self.assertAlmostEqual(u.lambda_gb_s, 60 * 0.015 * 128 / 1024)

    def test_express_bills_the_whole_turn_in_64_mb_chunks(self):
        self.assertAlmostEqual(sim.usage_per_turn_minute(P, 1).express_gb_s, 60 * 64 / 1024)
        self.assertAlmostEqual(sim.express_billed_gb(replace(P, express_memory_mb=65)), 128 / 1024)
        self.assertAlmostEqual(sim.express_billed_seconds(replace(P, turn_seconds=60.01)), 60.1)

    def test_batching_divides_the_poll_loop_but_not_the_reads(self):
        batched = sim.usage_per_turn_minute(replace(P, batch_size=10), 1)
        self.assertAlmostEqual(batched.poll_invocations, 6)
        self.assertAlmostEqual(batched.transitions, 18 + 2)
        self.assertAlmostEqual(batched.rru, 60)

    def test_adaptive_mix_lies_between_its_two_intervals(self):
        fast, slow = sim.usage_per_turn_minute(P, 1), sim.usage_per_turn_minute(P, 5)
        mix = sim.blended_usage(P, 1, 5, 0.25)
        self.assertAlmostEqual(mix.transitions, 0.25 * fast.transitions + 0.75 * slow.transitions)
        self.assertLess(slow.transitions, mix.transitions)
        self.assertLess(mix.transitions, fast.transitions)
        self.assertAlmostEqual(mix.wru, fast.wru)


class CostTest(unittest.TestCase):
    def test_standard_cost_decreases_as_the_interval_grows(self):
        costs = [sim.cost_standard(sim.usage_per_turn_minute(P, i), PR)["total"] for i in sim.INTERVALS]
        self.assertEqual(costs, sorted(costs, reverse=True))
        self.assertGreater(costs[0], costs[1])

    def test_express_cost_decreases_too_but_only_through_lambda_and_reads(self):
        costs = [sim.cost_express(sim.usage_per_turn_minute(P, i), PR) for i in sim.INTERVALS]
        self.assertGreater(costs[0]["total"], costs[-1]["total"])
        self.assertEqual(len({round(c["step_functions"], 12) for c in costs}), 1)

    def test_express_is_cheaper_than_standard_at_every_interval(self):
        for interval in sim.INTERVALS:
            u = sim.usage_per_turn_minute(P, interval)
            self.assertLess(sim.cost_express(u, PR)["total"], sim.cost_standard(u, PR)["total"])

    def test_standard_at_one_second_is_dominated_by_transitions(self):
        c = sim.cost_standard(sim.usage_per_turn_minute(P, 1), PR)
        self.assertAlmostEqual(c["step_functions"], 182 * 0.025 / 1000)
        self.assertGreater(c["step_functions"] / c["total"], 0.95)

    def test_total_is_the_sum_of_its_parts(self):
        c = sim.cost_standard(sim.usage_per_turn_minute(P, 2), PR)
        self.assertAlmostEqual(c["total"], c["step_functions"] + c["lambda"] + c["dynamodb"])


class CeilingTest(unittest.TestCase):
    def test_binding_constraint_is_the_minimum_ceiling(self):
        for q in (sim.US_EAST_1, sim.OTHER_REGION):
            for workflow in ("standard", "express"):
                for interval in sim.INTERVALS:
                    ceils = sim.ceilings(P, q, interval, workflow)
                    name, value = sim.binding(ceils)
                    self.assertEqual(value, min(ceils.values()))
                    self.assertEqual(ceils[name], value)
                    self.assertLessEqual(value, sim.next_binding(ceils)[1])

    def test_poll_driven_ceilings_scale_linearly_with_the_interval(self):
        no_api = replace(P, api_invokes_per_turn=0, transitions_start_end=0)
        for name in ("SFN state transitions", "Lambda invoke rate", "Lambda concurrency", "DDB sessions reads"):
            one = sim.ceilings(no_api, sim.US_EAST_1, 1)[name]
            for interval in (2, 5):
                self.assertAlmostEqual(sim.ceilings(no_api, sim.US_EAST_1, interval)[name], one * interval)

    def test_per_turn_ceilings_do_not_depend_on_the_interval(self):
        for name in ("SFN StartExecution", "SFN open executions", "DDB sessions writes"):
            values = {sim.ceilings(P, sim.US_EAST_1, i)[name] for i in sim.INTERVALS}
            self.assertEqual(len(values), 1, name)

    def test_state_transition_ceiling_at_one_second(self):
        ceils = sim.ceilings(P, sim.US_EAST_1, 1)
        self.assertAlmostEqual(ceils["SFN state transitions"], 1500 / (182 / 60))
        self.assertEqual(sim.binding(ceils)[0], "SFN state transitions")

    def test_state_transitions_bind_first_for_standard_everywhere(self):
        for q in (sim.US_EAST_1, sim.OTHER_REGION):
            for interval in sim.INTERVALS:
                self.assertEqual(sim.binding(sim.ceilings(P, q, interval))[0], "SFN state transitions")

    def test_smaller_region_has_the_lower_ceiling(self):
        for interval in sim.INTERVALS:
            big = sim.binding(sim.ceilings(P, sim.US_EAST_1, interval))[1]
            small = sim.binding(sim.ceilings(P, sim.OTHER_REGION, interval))[1]
            self.assertLess(small, big)

    def test_start_execution_ceiling_is_refill_times_turn_length(self):
        self.assertAlmostEqual(sim.ceilings(P, sim.US_EAST_1, 1)["SFN StartExecution"], 300 * 60)
        self.assertAlmostEqual(sim.ceilings(P, sim.OTHER_REGION, 1)["SFN StartExecution"], 150 * 60)

    def test_lambda_concurrency_is_invokes_per_second_times_duration(self):
        no_api = replace(P, api_invokes_per_turn=0)
        self.assertAlmostEqual(sim.ceilings(no_api, sim.US_EAST_1, 1)["Lambda concurrency"], 1000 / 0.015)

    def test_express_has_no_transition_or_open_execution_ceiling(self):
        ceils = sim.ceilings(P, sim.US_EAST_1, 1, "express")
        self.assertTrue(math.isinf(ceils["SFN state transitions"]))
        self.assertTrue(math.isinf(ceils["SFN open executions"]))
        self.assertAlmostEqual(ceils["SFN StartExecution"], 6000 * 60)

    def test_express_lifts_the_binding_ceiling(self):
        for interval in sim.INTERVALS:
            standard = sim.binding(sim.ceilings(P, sim.US_EAST_1, interval))[1]
            express = sim.binding(sim.ceilings(P, sim.US_EAST_1, interval, "express"))[1]
            self.assertGreater(express, standard)

    def test_every_quota_has_a_lever(self):
        self.assertEqual(set(sim.per_turn_rates(P, 1)), set(sim.LEVERS))


class HotKeyTest(unittest.TestCase):
    def test_one_session_polled_every_second_is_far_below_the_partition_limits(self):
        h = sim.hot_session(P, sim.US_EAST_1, 1)
        self.assertAlmostEqual(h["rcu_per_s"], 1.0)
        self.assertAlmostEqual(h["read_headroom"], 3000)
        self.assertGreater(h["write_headroom"], 1000)

    def test_rate_limit_counters_at_their_limits_are_far_below_the_partition_limit(self):
        for name, wru, headroom, attempts in sim.rate_limit_counters(sim.US_EAST_1):
            self.assertLess(wru, 1.0, name)
            self.assertGreaterEqual(headroom, 1000, name)
            self.assertIn(attempts, (500, 1000), name)


class ReportTest(unittest.TestCase):
    def test_report_is_deterministic_and_markdown_has_tables(self):
        self.assertEqual(sim.report(markdown=True), sim.report(markdown=True))
        md = sim.report(markdown=True)
        self.assertIn("| quota | 1 s | 2 s | 5 s | lever |", md)
        self.assertIn("**494**", md)

    def test_main_prints(self):
        out = io.StringIO()
        with redirect_stdout(out):
            self.assertEqual(sim.main(["--markdown"]), 0)
        self.assertIn("Usage and cost per turn-minute", out.getvalue())


if __name__ == "__main__":
    unittest.main()
