using NegDistill.Data;

namespace NegDistill.Data.Tests;

/// <summary>
/// The MATH checker against the behaviour of hendrycks/math modeling/math_equivalence.py,
/// dataset/util.py and eval_math_gpt.py (main branch). Each case names the rule or quirk it pins.
/// </summary>
public class MathCheckerTests
{
    // ---- last_boxed_only_string ----

    [TestCase("The answer is $\\boxed{5}$.", "\\boxed{5}")]
    [TestCase("\\boxed{1} then \\boxed{2}", "\\boxed{2}")]                          // the last box wins
    [TestCase("\\boxed{\\frac{1}{2}}", "\\boxed{\\frac{1}{2}}")]                    // nested braces
    [TestCase("\\boxed{a}}", "\\boxed{a}")]                                          // stops at the balancing brace
    [TestCase("x \\fbox{7} y", "\\fbox{7}")]                                         // fbox found when no \boxed exists
    [TestCase("\\boxed{1} and later \\fbox{2}", "\\boxed{1}")]                      // any \boxed beats a later \fbox
    [TestCase("\\boxed 5 and {x}", "\\boxed 5 and {x}")]                             // "\boxed 5": scan runs to the next balanced group
    public void LastBoxedOnlyString_finds_the_last_box(string text, string expected)
    {
        Assert.That(MathChecker.LastBoxedOnlyString(text), Is.EqualTo(expected));
    }

    [TestCase("no box here")]
    [TestCase("\\boxed{unbalanced")]                  // unbalanced box yields None
    [TestCase("\\boxed 5")]                           // no braces at all
    [TestCase("\\fbox{open")]
    [TestCase("")]
    public void LastBoxedOnlyString_yields_null(string text)
    {
        Assert.That(MathChecker.LastBoxedOnlyString(text), Is.Null);
    }

    [Test]
    public void LastBoxedOnlyString_brace_counter_can_go_negative()
    {
        // Counts for "}}{{}": -1, -2, -1, 0 (reached on a '{', which never closes), -1: no close.
        Assert.That(MathChecker.LastBoxedOnlyString("\\boxed}}{{}"), Is.Null);
        // "}{}": -1, 0 on '{', -1: no close.
        Assert.That(MathChecker.LastBoxedOnlyString("\\boxed}{}"), Is.Null);
    }

    // ---- remove_boxed ----

    [TestCase("\\boxed{5}", "5")]
    [TestCase("\\boxed{}", "")]                       // empty content is "", not None
    [TestCase("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}")]
    [TestCase("\\boxed{a}b}", "a}b")]                 // only prefix and last char are checked
    public void RemoveBoxed_strips_the_wrapper(string boxed, string expected)
    {
        Assert.That(MathChecker.RemoveBoxed(boxed), Is.EqualTo(expected));
    }

    [TestCase("\\fbox{5}")]                          // \fbox is found but remove_boxed yields None
    [TestCase("\\boxed 5")]
    [TestCase("\\boxed{5")]
    [TestCase("\\boxed{")]
    [TestCase("boxed{5}")]
    [TestCase("")]
    public void RemoveBoxed_yields_null(string boxed)
    {
        Assert.That(MathChecker.RemoveBoxed(boxed), Is.Null);
    }

    [Test]
    public void RemoveBoxed_of_null_is_null()
    {
        Assert.That(MathChecker.RemoveBoxed(null), Is.Null);
    }

    [Test]
    public void Fbox_answers_extract_to_null()
    {
        Assert.That(MathChecker.ExtractAnswer("so the answer is \\fbox{12}"), Is.Null);
        Assert.That(MathChecker.ExtractAnswer("so the answer is \\boxed{12}"), Is.EqualTo("12"));
    }

    // ---- _strip_string, rule by rule ----

    [TestCase("1\n2", "12")]                                   // line breaks removed
    [TestCase("a\\!b", "ab")]                                  // inverse spaces removed
    [TestCase("\\\\frac{1}{2}", "\\frac{1}{2}")]               // \\ -> \
    [TestCase("\\tfrac{1}{2}", "\\frac{1}{2}")]                // tfrac -> frac
    [TestCase("\\dfrac{1}{2}", "\\frac{1}{2}")]                // dfrac -> frac
    [TestCase("tfracx", "fracx")]                              // the replacement is textual, no backslash needed
    [TestCase("\\left(x\\right)", "(x)")]                      // \left, \right removed
    [TestCase("90^\\circ", "90")]                              // degrees
    [TestCase("90^{\\circ}", "90")]
    [TestCase("\\$5", "5")]                                    // dollar signs
    [TestCase("10\\%", "10")]                                  // escaped percent removed
    [TestCase("10%", "10%")]                                   // quirk: a bare % stays (the second replace is "\%" again)
    [TestCase("\\\\\\%%", "")]                               // quirk: the escaped-percent replace runs twice (\\\%% -> \\%% -> \% -> "")
    [TestCase("\\\\%%", "%")]
    [TestCase("5\\text{ cm}", "5")]                            // units after "\text{ " dropped
    [TestCase("5\\text{cm}", "5\\text{cm}")]                   // ... only with the space
    [TestCase("", "")]                                         // empty stays empty
    [TestCase(".5", "\\frac{1}{2}")]                           // leading "." gets a 0, then 0.5 -> \frac{1}{2}
    [TestCase(".25", "0.25")]
    [TestCase("x, .5", "x,0.5")]                               // " ." -> " 0."
    [TestCase("{.5}", "{0.5}")]                                // "{." -> "{0."
    [TestCase("0.5", "\\frac{1}{2}")]                          // the 0.5 special case
    [TestCase("0.50", "0.50")]                                 // ... exactly "0.5" only
    [TestCase("k = 5", "5")]                                   // "k = " removed (left side "k " has length 2)
    [TestCase("k=5", "5")]
    [TestCase("xy=5", "5")]
    [TestCase("xyz=5", "xyz=5")]                               // left side longer than 2: kept
    [TestCase(" x = 5", "x=5")]                                // " x " is 3 long: kept (spaces removed afterwards)
    [TestCase("a=b=c", "a=b=c")]                               // two '=': kept
    [TestCase("=5", "5")]                                      // empty left side
    [TestCase("x=.5", ".5")]                                   // quirk: the leading-0 rule runs before the "=" rule
    [TestCase("𝑥𝑦=3", "3")]                                    // left side measured in code points (2), not UTF-16 units (4)
    [TestCase("\\sqrt3", "\\sqrt{3}")]                         // _fix_sqrt
    [TestCase("\\sqrt{3}", "\\sqrt{3}")]
    [TestCase("2\\sqrt34", "2\\sqrt{3}4")]                     // one character is wrapped
    [TestCase("\\sqrt𝑥", "\\sqrt{𝑥}")]                         // ... one code point
    [TestCase("1 + 2", "1+2")]                                 // spaces removed
    [TestCase("\\frac12", "\\frac{1}{2}")]                     // _fix_fracs
    [TestCase("\\frac1b", "\\frac{1}{b}")]
    [TestCase("\\frac1{72}", "\\frac{1}{72}")]
    [TestCase("\\frac{72}1", "\\frac{72}1")]                   // not fixed when the numerator is braced
    [TestCase("\\frac123", "\\frac{1}{2}3")]
    [TestCase("\\frac1", "\\frac1")]                           // fewer than 2 characters: returned unchanged
    [TestCase("\\frac12+\\frac3", "\\frac12+\\frac3")]         // ... the whole input, not a partial fix
    [TestCase("\\frac\\pi2", "\\frac{\\}{p}i2")]               // quirk: the first two characters, whatever they are
    [TestCase("\\frac𝑥𝑦", "\\frac{𝑥}{𝑦}")]                     // code points, not UTF-16 units
    [TestCase("3/4", "\\frac{3}{4}")]                          // _fix_a_slash_b
    [TestCase("-3/4", "\\frac{-3}{4}")]
    [TestCase("3/-4", "\\frac{3}{-4}")]
    [TestCase("0/5", "\\frac{0}{5}")]
    [TestCase("03/4", "03/4")]                                 // int("03") formats as "3": not converted
    [TestCase("-0/4", "-0/4")]
    [TestCase("+3/4", "+3/4")]
    [TestCase("1.5/2", "1.5/2")]
    [TestCase("x/2", "x/2")]
    [TestCase("1/2/3", "1/2/3")]                               // more than one '/'
    [TestCase("٣/4", "٣/4")]                                   // Arabic-Indic digit: int() accepts, format differs
    [TestCase("123456789012345678901234567890/7", "\\frac{123456789012345678901234567890}{7}")] // Python ints are unbounded
    public void StripString_applies_each_rule(string input, string expected)
    {
        Assert.That(MathChecker.StripString(input), Is.EqualTo(expected));
    }

    [TestCase("1\\text{ m}+2\\text{ m}")]      // _remove_right_units asserts a single "\text{ "
    [TestCase("\\frac")]                       // _fix_fracs: IndexError on the empty tail
    [TestCase("1+\\frac")]
    [TestCase("\\sqrt")]                       // _fix_sqrt: IndexError
    [TestCase("\\sqrt\\sqrt2")]                // an empty piece between two \sqrt
    public void StripString_throws_where_the_reference_raises(string input)
    {
        Assert.Throws<MathNormalizationException>(() => MathChecker.StripString(input));
        Assert.That(MathChecker.TryStripString(input, out _, out string? error), Is.False);
        Assert.That(error, Is.Not.Null.And.Not.Empty);
    }

    [Test]
    public void Helper_functions_match_their_reference_counterparts()
    {
        Assert.That(MathChecker.FixFracs("a\\frac12b"), Is.EqualTo("a\\frac{1}{2}b"));
        Assert.That(MathChecker.FixFracs("\\frac1{2}"), Is.EqualTo("\\frac{1}{2}"));
        Assert.That(MathChecker.FixFracs("\\frac1{"), Is.EqualTo("\\frac{1}{"));      // b == "{" with nothing after it
        Assert.That(MathChecker.FixFracs("nofrac"), Is.EqualTo("nofrac"));
        Assert.Throws<MathNormalizationException>(() => MathChecker.FixFracs("x\\frac"));
        Assert.That(MathChecker.FixSqrt("\\sqrt2\\sqrt{3}"), Is.EqualTo("\\sqrt{2}\\sqrt{3}"));
        Assert.That(MathChecker.FixSqrt("none"), Is.EqualTo("none"));
        Assert.Throws<MathNormalizationException>(() => MathChecker.FixSqrt("2\\sqrt"));
        Assert.That(MathChecker.RemoveRightUnits("4\\text{ inches}^2"), Is.EqualTo("4"));
        Assert.That(MathChecker.RemoveRightUnits("4"), Is.EqualTo("4"));
        Assert.Throws<MathNormalizationException>(() => MathChecker.RemoveRightUnits("\\text{ a}\\text{ b}"));
        Assert.That(MathChecker.FixASlashB("10/3"), Is.EqualTo("\\frac{10}{3}"));
        Assert.That(MathChecker.FixASlashB("10 / 3"), Is.EqualTo("10 / 3"));
        Assert.That(MathChecker.FixASlashB("/3"), Is.EqualTo("/3"));
    }

    // ---- is_equiv ----

    [TestCase("\\tfrac{1}{2} +\\! \\frac1{72}", "\\\\dfrac{1}{2} +\\frac{1}{72}", true)]
    [TestCase("\\tfrac{1}{2} + \\frac1{72}", "\\\\frac{1}{2} + 2/3", false)]
    [TestCase("10, 4, -2", "4, 10, -2", false)]                 // order matters
    [TestCase("10\\text{ units}", "10 ", true)]
    [TestCase("10\\text{ units}", "100 ", false)]
    [TestCase("10", "\\$10", true)]
    [TestCase("\\left(x-2\\right)\\left(x+2\\right)", "(x-2)(x+2)", true)]
    [TestCase("0.1, 4, 2", "4, .1, 2", false)]
    [TestCase("0.1", ".1", true)]
    [TestCase("10\\%", "10", true)]
    [TestCase("10%", "10", false)]                              // bare % is not removed
    [TestCase("10\\sqrt{3} + \\sqrt4", "10\\sqrt3 + \\sqrt{4}", true)]
    [TestCase("\\frac34i", "\\frac{3}{4}i", true)]
    [TestCase("\\tfrac83", "\\frac{8}{3}", true)]
    [TestCase("5x - 7y + 11z + 4 = 0", "x + y - z + 2 = 0", false)]
    [TestCase("0.5", "\\frac12", true)]
    [TestCase("1/2", "\\frac{1}{2}", true)]
    [TestCase("x=.5", "\\frac12", false)]                       // ".5" survives after the "=" split
    [TestCase("x = 3", "3", true)]
    [TestCase("\\frac", "\\frac", true)]                        // stripping raises: raw comparison, equal
    [TestCase("\\frac", "\\frac ", false)]                      // raw comparison: different strings
    [TestCase("1\\text{ m}\\text{ s}", "1\\text{ m}\\text{ s}", true)]
    [TestCase("1\\text{ m}\\text{ s}", "1", false)]             // one side raises: raw comparison
    [TestCase("3", "\\sqrt", false)]
    public void IsEquiv_matches_the_reference(string a, string b, bool expected)
    {
        Assert.That(MathChecker.IsEquiv(a, b), Is.EqualTo(expected));
        Assert.That(MathChecker.IsEquiv(b, a), Is.EqualTo(expected));
        Assert.That(new MathChecker.AnswerKey(b).Matches(a), Is.EqualTo(expected));
    }

    [Test]
    public void IsEquiv_null_rules()
    {
        Assert.That(MathChecker.IsEquiv(null, null), Is.True);       // None vs None is equal
        Assert.That(MathChecker.IsEquiv(null, "5"), Is.False);       // None vs an answer is unequal
        Assert.That(MathChecker.IsEquiv("5", null), Is.False);
        Assert.That(MathChecker.IsEquiv(null, ""), Is.False);        // "" is an answer, not None
        Assert.That(new MathChecker.AnswerKey(null).Matches(null), Is.True);
        Assert.That(new MathChecker.AnswerKey(null).Matches("5"), Is.False);
        Assert.That(new MathChecker.AnswerKey("5").Matches(null), Is.False);
    }

    [Test]
    public void IsCorrect_compares_the_last_boxes()
    {
        const string reference = "We get $x = \\boxed{\\dfrac{3}{4}}$.";
        Assert.That(MathChecker.IsCorrect("Solution:\nso $\\boxed{3/4}$", reference), Is.True);
        Assert.That(MathChecker.IsCorrect("first \\boxed{3/4}, finally \\boxed{1}", reference), Is.False);
        Assert.That(MathChecker.IsCorrect("no box at all", reference), Is.False);
        // Reference without a box: None; a rationale without a box is None too -> "correct".
        Assert.That(MathChecker.IsCorrect("no box", "reference without box"), Is.True);
        Assert.That(MathChecker.IsCorrect("answer \\fbox{4}", "reference without box"), Is.True);
        Assert.That(MathChecker.IsCorrect("answer \\boxed{4}", "reference without box"), Is.False);
        // \fbox in the rationale against a boxed reference: None vs "4".
        Assert.That(MathChecker.IsCorrect("answer \\fbox{4}", "so \\boxed{4}"), Is.False);
        // Unbalanced box in the rationale.
        Assert.That(MathChecker.IsCorrect("answer \\boxed{4", "so \\boxed{4}"), Is.False);
    }

    [Test]
    public void CodePointCount_counts_like_python_len()
    {
        Assert.That(MathChecker.CodePointCount("abc"), Is.EqualTo(3));
        Assert.That(MathChecker.CodePointCount("𝑥𝑦"), Is.EqualTo(2));
        Assert.That(MathChecker.CodePointCount("a\uD800b"), Is.EqualTo(3)); // lone surrogate counts one
        Assert.That(MathChecker.CodePointCount(""), Is.EqualTo(0));
    }

    /// <summary>Property: is_equiv(a, a) for any content a, and a boxed string's content is recovered.</summary>
    [Test]
    public void Property_IsEquiv_is_reflexive_on_random_boxed_strings()
    {
        string[] alphabet =
        [
            "0", "1", "2", "7", ".", "-", "+", "/", "=", " ", "x", "y", "\\frac", "\\dfrac", "\\sqrt", "\\pi", "{", "}",
            "^", "_", "\\left(", "\\right)", "\\text{ cm}", "\\%", "%", "\\$", "\\!", "\\\\", "\n", "é", "𝑥", "∞", ",", "\\circ",
        ];
        var rng = new SplitMix64(20240101);
        int checkedCount = 0;
        for (int i = 0; i < 20_000; i++)
        {
            int len = rng.NextInt(12);
            var sb = new System.Text.StringBuilder();
            for (int k = 0; k < len; k++)
            {
                sb.Append(alphabet[rng.NextInt(alphabet.Length)]);
            }

            string content = sb.ToString();
            Assert.That(MathChecker.IsEquiv(content, content), Is.True, content);

            // When the content's braces balance, boxing and extracting gives it back.
            if (BracesBalanced(content))
            {
                string rationale = "Solution:\nthus $\\boxed{" + content + "}$.";
                string? extracted = MathChecker.ExtractAnswer(rationale);
                Assert.That(extracted, Is.EqualTo(content), rationale);
                Assert.That(MathChecker.IsCorrect(rationale, "ref \\boxed{" + content + "}"), Is.True, rationale);
                checkedCount++;
            }
        }

        Assert.That(checkedCount, Is.GreaterThan(5_000));
    }

    private static bool BracesBalanced(string s)
    {
        int depth = 0;
        foreach (char c in s)
        {
            if (c == '{')
            {
                depth++;
            }
            else if (c == '}' && --depth < 0)
            {
                return false;
            }
        }

        return depth == 0;
    }
}
