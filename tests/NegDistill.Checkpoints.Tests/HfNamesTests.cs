namespace NegDistill.Checkpoints.Tests;

public class HfNamesTests
{
    [Test]
    public void BaseModelNamesAreSpelledAsTransformersSpellsThem()
    {
        Assert.That(HfNames.EmbedTokens, Is.EqualTo("model.embed_tokens.weight"));
        Assert.That(HfNames.FinalNorm, Is.EqualTo("model.norm.weight"));
        Assert.That(HfNames.LmHead, Is.EqualTo("lm_head.weight"));
        Assert.That(HfNames.Linear(3, LinearModule.QProj), Is.EqualTo("model.layers.3.self_attn.q_proj.weight"));
        Assert.That(HfNames.Linear(3, LinearModule.KProj), Is.EqualTo("model.layers.3.self_attn.k_proj.weight"));
        Assert.That(HfNames.Linear(3, LinearModule.VProj), Is.EqualTo("model.layers.3.self_attn.v_proj.weight"));
        Assert.That(HfNames.Linear(3, LinearModule.OProj), Is.EqualTo("model.layers.3.self_attn.o_proj.weight"));
        Assert.That(HfNames.Linear(12, LinearModule.GateProj), Is.EqualTo("model.layers.12.mlp.gate_proj.weight"));
        Assert.That(HfNames.Linear(12, LinearModule.UpProj), Is.EqualTo("model.layers.12.mlp.up_proj.weight"));
        Assert.That(HfNames.Linear(12, LinearModule.DownProj), Is.EqualTo("model.layers.12.mlp.down_proj.weight"));
        Assert.That(HfNames.InputLayerNorm(0), Is.EqualTo("model.layers.0.input_layernorm.weight"));
        Assert.That(HfNames.PostAttentionLayerNorm(0), Is.EqualTo("model.layers.0.post_attention_layernorm.weight"));
        Assert.Throws<ArgumentOutOfRangeException>(() => HfNames.Linear(-1, LinearModule.QProj));
    }

    [Test]
    public void BaseModelNameListCoversEveryWeightOnce()
    {
        var names = HfNames.BaseModelNames(2);
        Assert.That(names, Has.Count.EqualTo(1 + 2 * 9 + 2));
        Assert.That(names, Is.Unique);
        Assert.That(names[0], Is.EqualTo(HfNames.EmbedTokens));
        Assert.That(names[^1], Is.EqualTo(HfNames.LmHead));
        Assert.That(names, Does.Contain("model.layers.1.mlp.down_proj.weight"));
        Assert.That(HfNames.BaseModelNames(2, tiedEmbeddings: true), Does.Not.Contain(HfNames.LmHead));
    }

    [Test]
    public void LoraNamesAreSpelledAsPeftSavesThem()
    {
        Assert.That(HfNames.Lora(0, LinearModule.QProj, LoraMatrix.A), Is.EqualTo("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
        Assert.That(HfNames.Lora(7, LinearModule.OProj, LoraMatrix.B), Is.EqualTo("base_model.model.model.layers.7.self_attn.o_proj.lora_B.weight"));
        Assert.That(HfNames.Lora(31, LinearModule.GateProj, LoraMatrix.A), Is.EqualTo("base_model.model.model.layers.31.mlp.gate_proj.lora_A.weight"));
        Assert.That(HfNames.Lora(2, LinearModule.DownProj, LoraMatrix.B), Is.EqualTo("base_model.model.model.layers.2.mlp.down_proj.lora_B.weight"));
        Assert.That(HfNames.PeftModulePath(1, LinearModule.UpProj) + ".integration.Q.weight",
            Is.EqualTo("base_model.model.model.layers.1.mlp.up_proj.integration.Q.weight"));
    }

    [Test]
    public void EveryLoraNameParsesBackToItsParts()
    {
        foreach (int layer in new[] { 0, 1, 9, 10, 127, int.MaxValue })
        foreach (var module in HfNames.AllLinearModules)
        foreach (var matrix in new[] { LoraMatrix.A, LoraMatrix.B })
        {
            string name = HfNames.Lora(layer, module, matrix);
            var parsed = HfNames.ParseLora(name);
            Assert.That(parsed, Is.EqualTo(new LoraName(layer, module, matrix)), name);
            Assert.That(parsed.ToString(), Is.EqualTo(name));
        }
    }

    [TestCase("model.layers.0.self_attn.q_proj.lora_A.weight", "must start with", TestName = "Lora name without the PEFT prefix")]
    [TestCase("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight", "9 dot-separated parts", TestName = "Lora name with the adapter name left in")]
    [TestCase("base_model.model.model.layers.0.mlp.q_proj.lora_A.weight", "belongs under 'self_attn'", TestName = "Attention projection under mlp")]
    [TestCase("base_model.model.model.layers.0.self_attn.up_proj.lora_B.weight", "belongs under 'mlp'", TestName = "Mlp projection under self_attn")]
    [TestCase("base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight", "'qkv_proj' is not one of", TestName = "Unknown module")]
    [TestCase("base_model.model.model.layers.0.self_attn.q_proj.lora_C.weight", "'lora_A' or 'lora_B'", TestName = "Unknown factor")]
    [TestCase("base_model.model.model.layers.0.self_attn.q_proj.lora_A.bias", "end in '.weight'", TestName = "Bias instead of weight")]
    [TestCase("base_model.model.model.layers.-1.self_attn.q_proj.lora_A.weight", "layer index '-1'", TestName = "Negative layer")]
    [TestCase("base_model.model.model.layers.01.self_attn.q_proj.lora_A.weight", "layer index '01'", TestName = "Layer with a leading zero")]
    [TestCase("base_model.model.model.layers.x.self_attn.q_proj.lora_A.weight", "layer index 'x'", TestName = "Layer that is not a number")]
    [TestCase("base_model.model.model.layers.99999999999.self_attn.q_proj.lora_A.weight", "layer index", TestName = "Layer too large")]
    [TestCase("base_model.model.model.blocks.0.self_attn.q_proj.lora_A.weight", "must start with", TestName = "Blocks instead of layers")]
    [TestCase("", "must start with", TestName = "Empty name")]
    public void BadLoraNamesAreRejectedWithAReason(string name, string reason)
    {
        var ex = Assert.Throws<FormatException>(() => HfNames.ParseLora(name))!;
        Assert.That(ex.Message, Does.Contain($"'{name}'"));
        Assert.That(ex.Message, Does.Contain(reason));
        Assert.That(HfNames.TryParseLora(name, out _, out string? error), Is.False);
        Assert.That(error, Is.EqualTo(ex.Message));
    }

    [Test]
    public void ModuleNamesMapBothWays()
    {
        foreach (var m in HfNames.AllLinearModules)
        {
            Assert.That(HfNames.TryParseModule(HfNames.ModuleName(m), out var back));
            Assert.That(back, Is.EqualTo(m));
        }
        Assert.That(HfNames.TryParseModule("Q_PROJ", out _), Is.False);
        Assert.That(HfNames.ParentName(LinearModule.VProj), Is.EqualTo("self_attn"));
        Assert.That(HfNames.ParentName(LinearModule.GateProj), Is.EqualTo("mlp"));
        Assert.That(HfNames.LooksLikeLora("a.lora_B.weight"));
        Assert.That(HfNames.LooksLikeLora("a.q_proj.integration.Q.weight"), Is.False);
    }
}
