using NegDistill.Data;

namespace NegDistill.Data.Tests;

public class BatcherTests
{
    private static readonly ByteTokenizer Bytes = new();

    private static Pair P(string q, string r, string id = "p") => new(q, r, "algebra", "Level 1", true, id);

    [Test]
    public void Encode_adds_bos_and_eos_and_marks_the_question()
    {
        var batcher = new Batcher(Bytes);
        EncodedExample ex = batcher.Encode(P("Q?", "R."));
        // BOS, 'Q', '?', '\n', 'R', '.', EOS
        Assert.That(ex.Tokens, Is.EqualTo(new[] { 256, 'Q', '?', '\n', 'R', '.', 257 }));
        Assert.That(ex.QuestionTokens, Is.EqualTo(3));
        Assert.That(ex.LossMask, Is.EqualTo(new byte[] { 1, 1, 1, 1, 1, 1, 1 }));
        Assert.That(ex.Truncated, Is.False);

        var rationaleOnly = new Batcher(Bytes, new BatchingOptions { LossMask = LossMaskMode.RationaleOnly });
        EncodedExample ro = rationaleOnly.Encode(P("Q?", "R."));
        Assert.That(ro.LossMask, Is.EqualTo(new byte[] { 0, 0, 0, 1, 1, 1, 1 }));
    }

    [Test]
    public void Cutoff_keeps_the_first_tokens_and_drops_eos()
    {
        var batcher = new Batcher(Bytes, new BatchingOptions { CutoffLength = 5 });
        EncodedExample ex = batcher.Encode(P("abc", "defgh"));
        Assert.That(ex.Tokens, Is.EqualTo(new[] { 256, 'a', 'b', 'c', '\n' }));
        Assert.That(ex.Truncated, Is.True);
        Assert.That(ex.LossMask.Length, Is.EqualTo(5));

        var def = new Batcher(Bytes);
        Assert.That(def.Options.CutoffLength, Is.EqualTo(256));
        EncodedExample longEx = def.Encode(P(new string('q', 100), new string('r', 400)));
        Assert.That(longEx.Tokens.Length, Is.EqualTo(256));
        Assert.That(longEx.Tokens[^1], Is.EqualTo('r'));
    }

    [Test]
    public void Collate_shapes_padding_mask_and_targets()
    {
        var batcher = new Batcher(Bytes, new BatchingOptions { LossMask = LossMaskMode.RationaleOnly });
        EncodedExample a = batcher.Encode(P("ab", "c", "A"));   // BOS a b \n c EOS  (len 6, question 3)
        EncodedExample b = batcher.Encode(P("x", "y", "B"));    // BOS x \n y EOS    (len 5, question 2)
        Batch batch = batcher.Collate([a, b]);

        Assert.That((batch.B, batch.T), Is.EqualTo((2, 6)));
        Assert.That(batch.Tokens.Length, Is.EqualTo(12));
        Assert.That(batch.Lengths, Is.EqualTo(new[] { 6, 5 }));
        Assert.That(batch.SourceIds, Is.EqualTo(new[] { "A", "B" }));
        Assert.That(batch.Tokens[6..], Is.EqualTo(new[] { 256, 'x', '\n', 'y', 257, 258 }));      // right padding with PadId
        Assert.That(batch.AttentionMask, Is.EqualTo(new float[] { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0 }));
        // Row A: loss on positions 3.. ('\n', 'c', EOS); Targets[t] = Tokens[t+1] where t+1 is in the mask.
        Assert.That(batch.Targets[..6], Is.EqualTo(new[] { -1, -1, '\n', 'c', 257, -1 }));
        // Row B: loss on positions 2..; last real position (EOS) and padding have no target.
        Assert.That(batch.Targets[6..], Is.EqualTo(new[] { -1, '\n', 'y', 257, -1, -1 }));

        var full = new Batcher(Bytes);
        Batch fb = full.Collate([full.Encode(P("ab", "c"))]);
        Assert.That(fb.Targets, Is.EqualTo(new[] { 'a', 'b', '\n', 'c', 257, -1 }));

        var padded = new Batcher(Bytes, new BatchingOptions { CutoffLength = 8, PadToCutoff = true });
        Assert.That(padded.Collate([padded.Encode(P("a", "b"))]).T, Is.EqualTo(8));
    }

    [Test]
    public void Targets_follow_the_definition_on_random_batches()
    {
        var rng = new SplitMix64(3);
        var pairs = Enumerable.Range(0, 60).Select(i => P(new string('q', 1 + rng.NextInt(30)), new string('r', rng.NextInt(40)), "p" + i)).ToList();
        foreach (LossMaskMode mode in new[] { LossMaskMode.QuestionAndRationale, LossMaskMode.RationaleOnly })
        {
            var batcher = new Batcher(Bytes, new BatchingOptions { BatchSize = 7, CutoffLength = 48, LossMask = mode });
            List<EncodedExample> examples = batcher.EncodeAll(pairs);
            var byId = examples.ToDictionary(e => e.SourceId);
            foreach (Batch batch in batcher.Batches(examples))
            {
                Assert.That(batch.Tokens.Length, Is.EqualTo(batch.B * batch.T));
                for (int r = 0; r < batch.B; r++)
                {
                    EncodedExample ex = byId[batch.SourceIds[r]];
                    for (int t = 0; t < batch.T; t++)
                    {
                        int i = r * batch.T + t;
                        bool real = t < ex.Tokens.Length;
                        Assert.That(batch.AttentionMask[i], Is.EqualTo(real ? 1f : 0f));
                        Assert.That(batch.Tokens[i], Is.EqualTo(real ? ex.Tokens[t] : Bytes.PadId));
                        int expected = t + 1 < ex.Tokens.Length && ex.LossMask[t + 1] == 1 ? ex.Tokens[t + 1] : -1;
                        Assert.That(batch.Targets[i], Is.EqualTo(expected));
                    }
                }
            }
        }
    }

    [Test]
    public void Batches_cover_every_example_once_and_are_deterministic_by_seed()
    {
        var rng = new SplitMix64(11);
        var pairs = Enumerable.Range(0, 103).Select(i => P("q" + i, new string('r', rng.NextInt(50)), "p" + i)).ToList();
        var opts = new BatchingOptions { BatchSize = 8, LengthGroupFactor = 4, Seed = 2024 };
        var batcher = new Batcher(Bytes, opts);
        List<EncodedExample> examples = batcher.EncodeAll(pairs);

        List<int[]> plan = batcher.PlanBatches(examples);
        Assert.That(plan.SelectMany(b => b).OrderBy(i => i), Is.EqualTo(Enumerable.Range(0, 103)));
        Assert.That(plan.Count, Is.EqualTo(13));
        Assert.That(plan.Count(b => b.Length < 8), Is.EqualTo(1));

        var again = new Batcher(Bytes, opts).PlanBatches(examples);
        Assert.That(again, Is.EqualTo(plan));                                   // same seed, same order
        var otherSeed = new Batcher(Bytes, opts with { Seed = 2025 }).PlanBatches(examples);
        Assert.That(otherSeed, Is.Not.EqualTo(plan));
        Assert.That(batcher.PlanBatches(examples, epoch: 1), Is.Not.EqualTo(plan)); // epochs reshuffle

        var dropLast = new Batcher(Bytes, opts with { DropLast = true }).PlanBatches(examples);
        Assert.That(dropLast.All(b => b.Length == 8) && dropLast.Count == 12, Is.True);
    }

    [Test]
    public void Length_grouping_reduces_padding()
    {
        var rng = new SplitMix64(1);
        var pairs = Enumerable.Range(0, 400).Select(i => P("q", new string('r', 1 + rng.NextInt(200)), "p" + i)).ToList();
        long Padding(bool group)
        {
            var b = new Batcher(Bytes, new BatchingOptions { BatchSize = 8, GroupByLength = group, Seed = 5 });
            return b.Batches(b.EncodeAll(pairs)).Sum(x => (long)x.B * x.T - x.Lengths.Sum());
        }

        long grouped = Padding(true), ungrouped = Padding(false);
        TestContext.Out.WriteLine($"padding tokens: grouped {grouped}, ungrouped {ungrouped}");
        Assert.That(grouped * 4, Is.LessThan(ungrouped));
    }

    [Test]
    public void SplitMix64_matches_the_reference_sequence()
    {
        // First outputs of SplitMix64 seeded with 1234567 (Vigna's reference splitmix64.c).
        var g = new SplitMix64(1234567);
        Assert.That(g.NextUInt64(), Is.EqualTo(6457827717110365317UL));
        Assert.That(g.NextUInt64(), Is.EqualTo(3203168211198807973UL));
        Assert.That(g.NextUInt64(), Is.EqualTo(9817491932198370423UL));

        var h = new SplitMix64(42);
        int[] counts = new int[6];
        for (int i = 0; i < 60_000; i++)
        {
            counts[h.NextInt(6)]++;
        }

        Assert.That(counts.All(c => c is > 9_500 and < 10_500), Is.True, string.Join(",", counts));
        double d = h.NextDouble();
        Assert.That(d, Is.InRange(0.0, 1.0));
    }
}
