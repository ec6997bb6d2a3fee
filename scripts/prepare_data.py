#!/usr/bin/env python3
"""Extract the English prose of The Debian Administrator's Handbook (Debian package
debian-handbook, HTML under usr/share/doc/debian-handbook/html/en-US) into plain text:
paragraphs only (<div class="para">), in chapter order, one paragraph per line. Split into a calibration
part and a disjoint evaluation part.

usage: prepare_data.py HTML_DIR OUT_DIR
"""
import html.parser
import pathlib
import re
import sys


class Paragraphs(html.parser.HTMLParser):
    """Collects the text of each <div class="para"> (nested divs stay in their paragraph)."""

    def __init__(self):
        super().__init__()
        self.divs = 0
        self.para_at = None
        self.skip = 0
        self.buf = []
        self.paras = []

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "pre"):
            self.skip += 1
        if tag == "div":
            self.divs += 1
            if self.para_at is None and ("class", "para") in attrs:
                self.para_at = self.divs

    def handle_endtag(self, tag):
        if tag in ("script", "style", "pre") and self.skip:
            self.skip -= 1
        if tag == "div":
            if self.para_at == self.divs:
                text = re.sub(r"\s+", " ", "".join(self.buf)).strip()
                if len(text.split()) >= 8:  # prose, not captions or navigation
                    self.paras.append(text)
                self.buf = []
                self.para_at = None
            self.divs -= 1

    def handle_data(self, data):
        if self.para_at is not None and not self.skip:
            self.buf.append(data)


def main():
    src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    files = sorted(p for p in src.glob("*.html") if p.name not in ("index.html",))
    paras = []
    for f in files:
        p = Paragraphs()
        p.feed(f.read_text(encoding="utf-8", errors="replace"))
        paras.extend(p.paras)
    # Chapters alternate between the two parts in blocks so both cover the whole book.
    calib, evalp = [], []
    for i, para in enumerate(paras):
        (evalp if (i // 40) % 4 == 0 else calib).append(para)
    out.mkdir(parents=True, exist_ok=True)
    (out / "handbook-calib.txt").write_text("\n".join(calib) + "\n", encoding="utf-8")
    (out / "handbook-eval.txt").write_text("\n".join(evalp) + "\n", encoding="utf-8")
    print(f"{len(files)} chapters, {len(paras)} paragraphs: calib {sum(map(len, calib))} chars, eval {sum(map(len, evalp))} chars")


if __name__ == "__main__":
    main()
