package admin

import (
	"context"

	"paradigm/internal/relay"
)

type webhooks struct{}

func newWebhooks(cfg Config) (*webhooks, error) { return &webhooks{}, nil }

func (h *webhooks) run(ctx context.Context, r *relay.Relay) {}
