using NegDistill.Data;
using NegDistill.Data.Synthetic;

namespace NegDistill.Data.Tests;

/// <summary>The demo world and its teacher: gold solutions are right by the exact checker, every error kind
/// is wrong by it and still right where it should be, the phrase tokenizer round-trips the world's text in
/// fewer ids, and the teacher's positives get scarcer as the chains get longer.</summary>
public class ArithmeticWorldTests
{
    [Test]
    public void Gold_solution_restates_each_step_and_boxes_the_answer()
    {
        var p = ArithmeticWorld.ProblemAtLevel(1, 42, 3);
        Assert.That(p.Level, Is.EqualTo(3));
        Assert.That(p.GoldLines, Has.Length.EqualTo(3));
        int v = p.Operands[0];
        for (int i = 0; i < 3; i++)
        {
            int next = p.Ops[i] == '+' ? v + p.Operands[i + 1] : v - p.Operands[i + 1];
            Assert.That(p.GoldLines[i], Is.EqualTo($"{p.Verbs[i]}: {v} {p.Ops[i]} {p.Operands[i + 1]} = {next}."));
            Assert.That(p.Question, Does.Contain($" {p.Verbs[i]}."));
            v = next;
        }
        Assert.That(p.Answer, Is.EqualTo(v));
        Assert.That(p.GoldSolution, Does.EndWith($"The answer is \\boxed{{{v}}}."));
        Assert.That(MathChecker.IsCorrect(PromptFormat.Rationale(p.GoldSolution), p.GoldSolution), Is.True);
        Assert.That(ArithmeticWorld.CorrectPrefix(p, PromptFormat.Rationale(p.GoldSolution)), Is.EqualTo(3));
        Assert.That(ArithmeticWorld.Problem(1, 42), Is.Not.SameAs(p));
        Assert.That(ArithmeticWorld.ProblemAtLevel(1, 42, 3).Question, Is.EqualTo(p.Question), "a pure function of seed and index");
    }

    [Test]
    public void Every_error_kind_is_wrong_and_keeps_what_it_should()
    {
        var p = ArithmeticWorld.ProblemAtLevel(7, 3, 4);
        foreach (var kind in new[] { TeacherError.SlippedArithmetic, TeacherError.WrongOperation, TeacherError.DroppedStep, TeacherError.WrongFinalCopy })
        {
            var rng = new SplitMix64(5);
            string r = PromptFormat.Rationale(ArithmeticWorld.Rationale(p, kind, ref rng, at: 2));
            Assert.That(MathChecker.IsCorrect(r, p.GoldSolution), Is.False, kind.ToString());
            int right = ArithmeticWorld.CorrectPrefix(p, r);
            // an error at step 2 (0-based) leaves steps 0 and 1 right; a wrong final copy leaves every step right
            Assert.That(right, Is.EqualTo(kind == TeacherError.WrongFinalCopy ? 4 : 2), kind.ToString());
        }
        var none = new SplitMix64(5);
        Assert.That(MathChecker.IsCorrect(PromptFormat.Rationale(ArithmeticWorld.Rationale(p, TeacherError.None, ref none)), p.GoldSolution), Is.True);
    }

    [Test]
    public void Positives_are_scarcer_on_longer_chains()
    {
        var rates = new TeacherErrorRates();
        var share = new double[ArithmeticWorld.MaxLevel + 1];
        for (int level = 1; level <= ArithmeticWorld.MaxLevel; level++)
        {
            int pos = 0, n = 0;
            for (int i = 0; i < 300; i++)
            {
                var p = ArithmeticWorld.ProblemAtLevel(3, i, level);
                foreach (var (text, error) in ArithmeticWorld.Teacher(p, 3))
                {
                    n++;
                    bool right = MathChecker.IsCorrect(text, p.GoldSolution);
                    Assert.That(right, Is.EqualTo(error == TeacherError.None), "the checker agrees with the error drawn");
                    if (right) pos++;
                }
            }
            share[level] = (double)pos / n;
            // 2,400 draws: the share is within 4 sd (≈ 0.04) of the rates' closed form
            Assert.That(share[level], Is.EqualTo(rates.Correct(level)).Within(0.04), $"level {level}");
        }
        for (int level = 2; level <= ArithmeticWorld.MaxLevel; level++) Assert.That(share[level], Is.LessThan(share[level - 1]), $"level {level}");
    }

    [Test]
    public void Phrase_tokenizer_round_trips_the_world_in_fewer_ids_and_any_text()
    {
        var tok = new PhraseTokenizer(ArithmeticWorld.Phrases);
        var bytes = new ByteTokenizer();
        long phraseIds = 0, byteIds = 0;
        for (int i = 0; i < 50; i++)
        {
            var p = ArithmeticWorld.Problem(2, i);
            string text = PromptFormat.TrainingText(PromptFormat.Question(p.Question), PromptFormat.Rationale(p.GoldSolution));
            int[] ids = tok.Encode(text, true, true);
            Assert.That(tok.Decode(ids), Is.EqualTo(text));
            Assert.That(ids, Has.All.InRange(0, tok.VocabSize - 1));
            phraseIds += ids.Length;
            byteIds += bytes.Encode(text, true, true).Length;
            // the prompt's ids are a prefix of the training text's: a student continues exactly what it was trained on
            int[] prompt = tok.Encode(PromptFormat.Prompt(PromptFormat.Question(p.Question)), true, false);
            Assert.That(ids.Take(prompt.Length), Is.EqualTo(prompt));
        }
        Assert.That(phraseIds, Is.LessThan(byteIds / 2), $"{phraseIds} phrase ids against {byteIds} bytes");
        foreach (string s in TokenizerTests.MathCorpus) Assert.That(tok.Decode(tok.Encode(s, true, true)), Is.EqualTo(s));
        // longest match: " gives away " is one id, and digits stay single bytes
        Assert.That(tok.Encode(" gives away 12.", false, false), Is.EqualTo(new[] { 259 + ArithmeticWorld.Phrases.ToList().IndexOf(" gives away "), '1', '2', '.' }));
        Assert.That(tok.Decode([256, 259, 257, 258]), Is.EqualTo(ArithmeticWorld.Phrases[0]));
        Assert.Throws<ArgumentOutOfRangeException>(() => tok.Decode([tok.VocabSize]));
        Assert.Throws<ArgumentException>(() => new PhraseTokenizer(["ab", "ab"]));
        Assert.Throws<ArgumentException>(() => new PhraseTokenizer(["a"]));
    }

    [Test]
    public void Phrase_tokenizer_saves_and_loads_its_list_and_refuses_a_bad_file()
    {
        using var dir = new TempDir();
        var tok = new PhraseTokenizer(["Problem:\n", " = ", "é\"x"]);
        tok.Save(dir.Path);
        var back = PhraseTokenizer.Load(Path.Combine(dir.Path, PhraseTokenizer.FileName));
        Assert.That(back.Phrases, Is.EqualTo(tok.Phrases));
        Assert.That(back.Encode("Problem:\n1 = 2", true, false), Is.EqualTo(tok.Encode("Problem:\n1 = 2", true, false)));
        string bad = dir.File("bad.json", "{\"not\": \"a list\"}");
        Assert.That(Assert.Throws<InvalidDataException>(() => PhraseTokenizer.Load(bad))!.Message, Does.Contain(bad));
        string dup = dir.File("dup.json", "[\"ab\", \"ab\"]");
        Assert.That(Assert.Throws<InvalidDataException>(() => PhraseTokenizer.Load(dup))!.Message, Does.Contain("distinct"));
    }
}
