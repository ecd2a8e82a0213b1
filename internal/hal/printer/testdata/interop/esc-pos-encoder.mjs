// Writes the receipt interop_test.go decodes, with esc-pos-encoder 3.0.0
// (npm), an ESC/POS encoder independent of ours. Regenerate with:
//   cd $(mktemp -d) && npm install esc-pos-encoder@3.0.0 && cp .../esc-pos-encoder.mjs . && node esc-pos-encoder.mjs > .../esc-pos-encoder.bin
import EscPosEncoder from 'esc-pos-encoder';
const e = new EscPosEncoder({ width: 32, wordWrap: true });
const out = e.initialize()
  .codepage('cp858')
  .align('center').bold(true).line('Café Zürich').bold(false)
  .align('left')
  .line('Espresso                € 4.50')
  .line('A long line that this encoder wraps at thirty-two columns')
  .newline()
  .align('right').line('Total € 4.50')
  .align('left')
  .newline().newline()
  .cut('partial')
  .encode();
process.stdout.write(Buffer.from(out));
