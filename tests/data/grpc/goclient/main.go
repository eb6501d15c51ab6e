// A grpc-go client for tests/grpc.rs: one unary call of test.Echo/Unary with raw
// bytes (no protoc), printed as JSON: the status code's name, its message, and the
// header and trailer metadata.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

type raw struct{}

func (raw) Marshal(v interface{}) ([]byte, error)      { return *(v.(*[]byte)), nil }
func (raw) Unmarshal(data []byte, v interface{}) error { *(v.(*[]byte)) = append([]byte(nil), data...); return nil }
func (raw) Name() string                               { return "proto" }

func main() {
	addr, msg := os.Args[1], os.Args[2]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, addr, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(2)
	}
	defer conn.Close()
	in, out := []byte(msg), []byte(nil)
	var header, trailer metadata.MD
	err = conn.Invoke(ctx, "/test.Echo/Unary", &in, &out,
		grpc.ForceCodec(raw{}), grpc.Header(&header), grpc.Trailer(&trailer))
	st := status.Convert(err)
	md := map[string]string{}
	for _, m := range []metadata.MD{header, trailer} {
		for k, v := range m {
			md[k] = v[0]
		}
	}
	json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"code": st.Code().String(), "message": st.Message(), "ok": string(out), "md": md,
	})
}
