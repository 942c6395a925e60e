// Microphone capture: posts blocks of float32 samples (at the AudioContext's rate) to the page.
class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = new Float32Array(960); // 40 ms at 24 kHz
    this.fill = 0;
  }
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) {
      for (let i = 0; i < channel.length; i++) {
        this.block[this.fill++] = channel[i];
        if (this.fill === this.block.length) {
          this.port.postMessage(this.block.slice(0));
          this.fill = 0;
        }
      }
    }
    return true;
  }
}
registerProcessor("capture-processor", CaptureProcessor);
