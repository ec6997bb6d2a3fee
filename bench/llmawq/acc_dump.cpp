// Dumps the model exactly as awq_llama loads it (fp32, HF layout) and the token ids of texts
// tokenized by our tokenizer, for the llm-awq comparison harness.
//   acc_dump MODEL.gguf OUTDIR name1=text1 [name2=text2 ...]
#include <awq/awq.hpp>
#include <awq/io/gguf.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "llama/llama_model.hpp"
#include "llama/tokenizer.hpp"

int main(int argc, char** argv) {
  const auto g = awq::io::GgufFile::open(argv[1]);
  const std::string out = argv[2];
  const auto m = awq_example::load_llama(g);
  awq_example::BpeTokenizer tok(g);
  std::ofstream bin(out + "/weights.bin", std::ios::binary);
  std::ofstream idx(out + "/index.txt");
  long off = 0;
  auto put = [&](const std::string& name, const float* p, long rows, long cols) {
    bin.write(reinterpret_cast<const char*>(p), rows * cols * 4);
    idx << name << " " << rows << " " << cols << " " << off << "\n";
    off += rows * cols * 4;
  };
  put("model.embed_tokens.weight", m.embed.data(), m.embed.rows(), m.embed.cols());
  put("model.norm.weight", m.final_norm.data(), 1, m.final_norm.size());
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const auto& l = m.layers[i];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    put(p + "self_attn.q_proj.weight", l.wq.data(), l.wq.rows(), l.wq.cols());
    put(p + "self_attn.k_proj.weight", l.wk.data(), l.wk.rows(), l.wk.cols());
    put(p + "self_attn.v_proj.weight", l.wv.data(), l.wv.rows(), l.wv.cols());
    put(p + "self_attn.o_proj.weight", l.wo.data(), l.wo.rows(), l.wo.cols());
    put(p + "mlp.gate_proj.weight", l.wg.data(), l.wg.rows(), l.wg.cols());
    put(p + "mlp.up_proj.weight", l.wu.data(), l.wu.rows(), l.wu.cols());
    put(p + "mlp.down_proj.weight", l.wd.data(), l.wd.rows(), l.wd.cols());
    put(p + "input_layernorm.weight", l.ln_in.data(), 1, l.ln_in.size());
    put(p + "post_attention_layernorm.weight", l.ln_post.data(), 1, l.ln_post.size());
  }
  std::ofstream cfg(out + "/config.txt");
  cfg << "hidden " << m.cfg.hidden << "\nintermediate " << m.cfg.intermediate << "\nheads " << m.cfg.n_heads << "\nkv_heads "
      << m.cfg.n_kv_heads << "\nhead_dim " << m.cfg.head_dim << "\nrms_eps " << m.cfg.rms_eps << "\nrope_theta " << m.cfg.rope_theta
      << "\nlayers " << m.layers.size() << "\nvocab " << m.vocab << "\n";
  cfg.close();
  std::fprintf(stderr, "rms_eps %.9g rope_theta %.9g\n", m.cfg.rms_eps, m.cfg.rope_theta);
  for (int a = 3; a < argc; ++a) {
    const std::string s = argv[a];
    const auto eq = s.find('=');
    std::ifstream f(s.substr(eq + 1), std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    const std::vector<int> ids = tok.encode(ss.str());
    std::ofstream t(out + "/tokens_" + s.substr(0, eq) + ".bin", std::ios::binary);
    t.write(reinterpret_cast<const char*>(ids.data()), static_cast<std::streamsize>(ids.size() * 4));
    std::fprintf(stderr, "%s: %zu tokens\n", s.substr(0, eq).c_str(), ids.size());
  }
  return 0;
}
